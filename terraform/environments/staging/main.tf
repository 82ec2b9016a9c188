# Staging: one region, the same modules as production with smaller sizes.

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.60" }
    tls = { source = "hashicorp/tls", version = ">= 4.0" }
  }
  backend "s3" {
    bucket       = "phoenix-guardian-terraform-state"
    key          = "staging/terraform.tfstate"
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

locals {
  name = "guardian-staging"
  tags = { project = "phoenix-guardian", environment = "staging", data = "synthetic-and-pilot" }
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
  node_min        = 2
  node_max        = 4
  kms_policy_json = data.aws_iam_policy_document.kms.json
  tags            = local.tags
}

module "kafka" {
  source                    = "../../modules/kafka"
  name                      = local.name
  vpc_id                    = var.vpc_id
  subnet_ids                = var.private_subnet_ids
  client_security_group_ids = [module.eks.node_security_group_id]
  instance_type             = "kafka.t3.small"
  volume_size_gb            = 100
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
  instance_class            = "db.t4g.medium"
  storage_gb                = 50
  backup_retention_days     = 7
  kms_policy_json           = data.aws_iam_policy_document.kms.json
  tags                      = local.tags
}

module "storage" {
  source          = "../../modules/storage"
  name            = local.name
  kms_policy_json = data.aws_iam_policy_document.kms.json
  tags            = local.tags
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
