# One region of the platform: EKS, MSK, (optionally) PostgreSQL, the buckets and the
# service-account roles, sharing one key policy. Staging uses one region; production a
# primary and a DR region (without its own database: backups are copied there).

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.60" }
    tls = { source = "hashicorp/tls", version = ">= 4.0" }
  }
}

data "aws_caller_identity" "current" {}

# Keys are administered by the account; services use them through their roles.
data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:a key policy's resource "*" is the key itself; the account root administers it (AWS's default key policy)
  #checkov:skip=CKV_AWS_111:as above
  #checkov:skip=CKV_AWS_356:as above
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

module "eks" {
  source          = "../eks"
  name            = var.name
  subnet_ids      = var.private_subnet_ids
  node_min        = var.sizes.node_min
  node_max        = var.sizes.node_max
  kms_policy_json = data.aws_iam_policy_document.kms.json
  tags            = var.tags
}

module "kafka" {
  source                    = "../kafka"
  name                      = var.name
  vpc_id                    = var.vpc_id
  subnet_ids                = var.private_subnet_ids
  client_security_group_ids = [module.eks.node_security_group_id]
  instance_type             = var.sizes.kafka_instance_type
  volume_size_gb            = var.sizes.kafka_volume_gb
  principals                = concat(var.services, [for h in var.hospitals : "hospital-${h}"])
  kms_policy_json           = data.aws_iam_policy_document.kms.json
  tags                      = var.tags
}

module "postgres" {
  source                    = "../postgres"
  count                     = var.database_subnet_ids == null ? 0 : 1
  name                      = var.name
  vpc_id                    = var.vpc_id
  subnet_ids                = var.database_subnet_ids
  client_security_group_ids = [module.eks.node_security_group_id]
  instance_class            = var.sizes.db_instance_class
  storage_gb                = var.sizes.db_storage_gb
  backup_retention_days     = var.sizes.db_backup_days
  kms_policy_json           = data.aws_iam_policy_document.kms.json
  tags                      = var.tags
}

module "storage" {
  source               = "../storage"
  name                 = var.name
  kms_policy_json      = data.aws_iam_policy_document.kms.json
  replication_role_arn = var.replication.role_arn
  replica_bucket_arns  = var.replication.bucket_arns
  replica_kms_key_arn  = var.replication.kms_key_arn
  tags                 = var.tags
}

module "iam" {
  source            = "../iam"
  name              = var.name
  hospitals         = var.hospitals
  bucket_arns       = module.storage.bucket_arns
  kms_key_arn       = module.storage.kms_key_arn
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer       = module.eks.oidc_issuer
  tags              = var.tags
}
