# Staging: one region, the same region module as production with smaller sizes.

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
    tags = { project = "phoenix-guardian", environment = "staging", data = "synthetic-and-pilot" }
  }
}

module "platform" {
  source              = "../../modules/region"
  name                = "guardian-staging"
  vpc_id              = var.vpc_id
  private_subnet_ids  = var.private_subnet_ids
  database_subnet_ids = var.database_subnet_ids
  services            = var.services
  hospitals           = var.hospitals
  sizes = {
    node_min            = 2
    node_max            = 4
    kafka_instance_type = "kafka.t3.small"
    kafka_volume_gb     = 100
    db_instance_class   = "db.t4g.medium"
    db_storage_gb       = 50
    db_backup_days      = 7
  }
}
