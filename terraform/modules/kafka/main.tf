# Amazon MSK for the guardian topics: SASL/SCRAM over TLS only, topics declared by the
# topic-provisioning Job (auto-create off), encryption at rest with a customer key,
# broker logs to CloudWatch.

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.60" }
  }
}

resource "aws_kms_key" "kafka" {
  description             = "${var.name}: MSK data at rest and SCRAM secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = var.kms_policy_json
  tags                    = var.tags
}

resource "aws_security_group" "brokers" {
  name_prefix = "${var.name}-msk-"
  description = "MSK brokers of ${var.name}: SASL/SCRAM+TLS from the cluster's nodes only"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "scram_tls" {
  for_each                     = toset(var.client_security_group_ids)
  security_group_id            = aws_security_group.brokers.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 9096
  to_port                      = 9096
  description                  = "SASL/SCRAM over TLS from the services and the MirrorMaker 2 workers"
}

resource "aws_msk_configuration" "guardian" {
  name           = "${var.name}-guardian"
  kafka_versions = [var.kafka_version]
  server_properties = join("\n", [
    "auto.create.topics.enable=false",
    "default.replication.factor=3",
    "min.insync.replicas=2",
    "unclean.leader.election.enable=false",
    "allow.everyone.if.no.acl.found=false",
    "transaction.state.log.replication.factor=3",
    "transaction.state.log.min.isr=2",
    "offsets.topic.replication.factor=3",
  ])
}

resource "aws_cloudwatch_log_group" "brokers" {
  name              = "/msk/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.kafka.arn
  tags              = var.tags
}

resource "aws_msk_cluster" "this" {
  cluster_name           = var.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = var.broker_count
  enhanced_monitoring    = "PER_TOPIC_PER_PARTITION"

  broker_node_group_info {
    instance_type   = var.instance_type
    client_subnets  = var.subnet_ids
    security_groups = [aws_security_group.brokers.id]
    storage_info {
      ebs_storage_info {
        volume_size = var.volume_size_gb
      }
    }
    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  client_authentication {
    unauthenticated = false
    sasl {
      scram = true
      iam   = false
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = aws_kms_key.kafka.arn
    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.guardian.arn
    revision = aws_msk_configuration.guardian.latest_revision
  }

  open_monitoring {
    prometheus {
      jmx_exporter {
        enabled_in_broker = true
      }
      node_exporter {
        enabled_in_broker = true
      }
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.brokers.name
      }
    }
  }

  tags = var.tags
}

# One SCRAM principal per service and per hospital agent; MSK reads them from Secrets
# Manager secrets named AmazonMSK_* encrypted with the cluster's key. The ACLs for these
# principals are applied by the platform's ACL job (see the chart's README).
resource "aws_secretsmanager_secret" "principal" {
  #checkov:skip=CKV2_AWS_57:SCRAM rotation needs a rotation function that also updates the Kubernetes secret; rotated by the runbook in terraform/README.md
  for_each   = toset(var.principals)
  name       = "AmazonMSK_${var.name}_${each.value}"
  kms_key_id = aws_kms_key.kafka.arn
  tags       = merge(var.tags, { principal = each.value })
}

resource "aws_msk_scram_secret_association" "principals" {
  cluster_arn     = aws_msk_cluster.this.arn
  secret_arn_list = [for s in aws_secretsmanager_secret.principal : s.arn]
}
