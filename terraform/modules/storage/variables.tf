variable "name" {
  description = "Prefix of the bucket names (environment and region)"
  type        = string
}

variable "archive_retention_years" {
  description = "Years archived topic data (the audit trail) is immutable and kept"
  type        = number
  default     = 7
  validation {
    condition     = var.archive_retention_years >= 7
    error_message = "Audit archives are kept at least 7 years."
  }
}

variable "kms_policy_json" {
  description = "Key policy of the buckets' KMS key"
  type        = string
}

variable "replication_role_arn" {
  description = "IAM role S3 replication assumes (null: no cross-region replication)"
  type        = string
  default     = null
}

variable "replica_bucket_arns" {
  description = "DR-region bucket ARN per bucket key (models, archive)"
  type        = map(string)
  default     = {}
}

variable "replica_kms_key_arn" {
  description = "KMS key of the DR-region buckets"
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags on every resource"
  type        = map(string)
  default     = {}
}
