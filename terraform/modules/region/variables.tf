variable "name" {
  description = "Prefix of every resource (environment, and -dr for the DR region)"
  type        = string
}

variable "vpc_id" {
  description = "VPC of the region"
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (EKS, MSK), one per availability zone"
  type        = list(string)
}

variable "database_subnet_ids" {
  description = "Database subnets in at least two availability zones (null: no database in this region)"
  type        = list(string)
  default     = null
}

variable "services" {
  description = "Service principals on the brokers"
  type        = list(string)
}

variable "hospitals" {
  description = "Hospital ids with a principal and a role of their own"
  type        = list(string)
}

variable "sizes" {
  description = "Capacity of the region"
  type = object({
    node_min            = number
    node_max            = number
    kafka_instance_type = string
    kafka_volume_gb     = number
    db_instance_class   = string
    db_storage_gb       = number
    db_backup_days      = number
  })
}

variable "replication" {
  description = "Cross-region replication of the buckets (all null: none)"
  type = object({
    role_arn    = string
    bucket_arns = map(string)
    kms_key_arn = string
  })
  default = { role_arn = null, bucket_arns = {}, kms_key_arn = null }
}

variable "tags" {
  description = "Tags on every resource"
  type        = map(string)
  default     = {}
}
