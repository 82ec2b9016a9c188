# Production: the primary region plus the DR region (its own MSK cluster that MirrorMaker
# 2 fills, its own EKS cluster kept scaled down until `guardian dr failover`, replicas of
# both buckets, and the database's backups copied across regions).

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.60" }
    tls = { source = "hashicorp/tls", version = ">= 4.0" }
  }
  backend "s3" {
    bucket       = "phoenix-guardian-terraform-state"
    key          = "production/terraform.tfstate"
    region       = "us-east-1"
    encrypt      = true
    use_lockfile = true
  }
}

locals {
  tags = { project = "phoenix-guardian", environment = "production", data = "phi-adjacent" }
  sizes = {
    node_min            = 3
    node_max            = 9
    kafka_instance_type = "kafka.m7g.large"
    kafka_volume_gb     = 500
    db_instance_class   = "db.m7g.large"
    db_storage_gb       = 200
    db_backup_days      = 35
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "dr"
  region = var.dr_region
  default_tags {
    tags = merge(local.tags, { region_role = "dr" })
  }
}

module "primary" {
  source              = "../../modules/region"
  name                = "guardian-production"
  vpc_id              = var.vpc_id
  private_subnet_ids  = var.private_subnet_ids
  database_subnet_ids = var.database_subnet_ids
  services            = var.services
  hospitals           = var.hospitals
  sizes               = local.sizes
  replication = {
    role_arn    = aws_iam_role.replication.arn
    bucket_arns = module.dr.bucket_arns
    kms_key_arn = module.dr.kms_key_arn
  }
}

# The DR region: MirrorMaker 2's target (IdentityReplicationPolicy: same topic names),
# scaled down until a failover; no database of its own (see the backup copies below).
module "dr" {
  source             = "../../modules/region"
  providers          = { aws = aws.dr }
  name               = "guardian-production-dr"
  vpc_id             = var.dr_vpc_id
  private_subnet_ids = var.dr_private_subnet_ids
  services           = var.services
  hospitals          = var.hospitals
  sizes              = merge(local.sizes, { node_min = 1 })
}

# Point-in-time recovery in the DR region from copied automated backups.
resource "aws_db_instance_automated_backups_replication" "dr" {
  provider               = aws.dr
  source_db_instance_arn = module.primary.database_arn
  kms_key_id             = module.dr.kms_key_arn
  retention_period       = 14
}

data "aws_iam_policy_document" "replication_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "replication" {
  statement {
    actions   = ["s3:GetReplicationConfiguration", "s3:ListBucket"]
    resources = values(module.primary.bucket_arns)
  }
  statement {
    actions   = ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging", "s3:GetObjectRetention", "s3:GetObjectLegalHold"]
    resources = [for arn in values(module.primary.bucket_arns) : "${arn}/*"]
  }
  statement {
    actions   = ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"]
    resources = [for arn in values(module.dr.bucket_arns) : "${arn}/*"]
  }
  statement {
    actions   = ["kms:Decrypt"]
    resources = [module.primary.kms_key_arn]
  }
  statement {
    actions   = ["kms:Encrypt", "kms:GenerateDataKey"]
    resources = [module.dr.kms_key_arn]
  }
}

resource "aws_iam_role" "replication" {
  name_prefix        = "guardian-production-s3-crr-"
  assume_role_policy = data.aws_iam_policy_document.replication_trust.json
}

resource "aws_iam_role_policy" "replication" {
  name   = "replicate-to-dr"
  role   = aws_iam_role.replication.id
  policy = data.aws_iam_policy_document.replication.json
}
