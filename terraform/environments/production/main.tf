# Production: the primary region plus the DR region (its own MSK cluster that MirrorMaker
# 2 fills, its own EKS cluster kept scaled down until `guardian dr failover`, replicas of
# both buckets, and the database backups copied across regions).

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

locals {
  name = "guardian-production"
  tags = { project = "phoenix-guardian", environment = "production", data = "phi-adjacent" }
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
  source          = "../../modules/eks"
  name            = local.name
  subnet_ids      = var.private_subnet_ids
  kms_policy_json = data.aws_iam_policy_document.kms.json
  tags            = local.tags
}

module "kafka" {
  source                    = "../../modules/kafka"
  name                      = local.name
  vpc_id                    = var.vpc_id
  subnet_ids                = var.private_subnet_ids
  client_security_group_ids = [module.eks.node_security_group_id]
  principals                = concat(var.services, [for h in var.hospitals : "hospital-${h}"])
  kms_policy_json           = data.aws_iam_policy_document.kms.json
  tags                      = local.tags
}

module "postgres" {
  source                    = "../../modules/postgres"
  name                      = local.name
  vpc_id                    = var.vpc_id
  subnet_ids                = var.database_subnet_ids
  client_security_group_ids = [module.eks.node_security_group_id]
  kms_policy_json           = data.aws_iam_policy_document.kms.json
  tags                      = local.tags
}

module "storage" {
  source               = "../../modules/storage"
  name                 = local.name
  kms_policy_json      = data.aws_iam_policy_document.kms.json
  replication_role_arn = aws_iam_role.replication.arn
  replica_bucket_arns  = module.storage_dr.bucket_arns
  replica_kms_key_arn  = module.storage_dr.kms_key_arn
  tags                 = local.tags
}

# ---- DR region -------------------------------------------------------------------

module "storage_dr" {
  source          = "../../modules/storage"
  providers       = { aws = aws.dr }
  name            = "${local.name}-dr"
  kms_policy_json = data.aws_iam_policy_document.kms.json
  tags            = local.tags
}

module "eks_dr" {
  source          = "../../modules/eks"
  providers       = { aws = aws.dr }
  name            = "${local.name}-dr"
  subnet_ids      = var.dr_private_subnet_ids
  node_min        = 1
  kms_policy_json = data.aws_iam_policy_document.kms.json
  tags            = local.tags
}

# The replication target of MirrorMaker 2 (IdentityReplicationPolicy: same topic names).
module "kafka_dr" {
  source                    = "../../modules/kafka"
  providers                 = { aws = aws.dr }
  name                      = "${local.name}-dr"
  vpc_id                    = var.dr_vpc_id
  subnet_ids                = var.dr_private_subnet_ids
  client_security_group_ids = [module.eks_dr.node_security_group_id]
  principals                = concat(var.services, [for h in var.hospitals : "hospital-${h}"])
  kms_policy_json           = data.aws_iam_policy_document.kms.json
  tags                      = local.tags
}

# Point-in-time recovery in the DR region from copied automated backups.
resource "aws_db_instance_automated_backups_replication" "dr" {
  provider               = aws.dr
  source_db_instance_arn = module.postgres.arn
  kms_key_id             = module.storage_dr.kms_key_arn
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
    resources = values(module.storage.bucket_arns)
  }
  statement {
    actions   = ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging", "s3:GetObjectRetention", "s3:GetObjectLegalHold"]
    resources = [for arn in values(module.storage.bucket_arns) : "${arn}/*"]
  }
  statement {
    actions   = ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"]
    resources = [for arn in values(module.storage_dr.bucket_arns) : "${arn}/*"]
  }
  statement {
    actions   = ["kms:Decrypt"]
    resources = [module.storage.kms_key_arn]
  }
  statement {
    actions   = ["kms:Encrypt", "kms:GenerateDataKey"]
    resources = [module.storage_dr.kms_key_arn]
  }
}

resource "aws_iam_role" "replication" {
  name_prefix        = "${local.name}-s3-crr-"
  assume_role_policy = data.aws_iam_policy_document.replication_trust.json
}

resource "aws_iam_role_policy" "replication" {
  name   = "replicate-to-dr"
  role   = aws_iam_role.replication.id
  policy = data.aws_iam_policy_document.replication.json
}

module "iam" {
  source            = "../../modules/iam"
  name              = local.name
  hospitals         = var.hospitals
  bucket_arns       = module.storage.bucket_arns
  kms_key_arn       = module.storage.kms_key_arn
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer       = module.eks.oidc_issuer
  tags              = local.tags
}
