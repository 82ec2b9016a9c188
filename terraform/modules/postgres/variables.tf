variable "name" {
  description = "Instance identifier"
  type        = string
}

variable "engine_version" {
  description = "PostgreSQL version (major.minor)"
  type        = string
  default     = "16.4"
}

variable "instance_class" {
  description = "Instance class"
  type        = string
  default     = "db.m7g.large"
}

variable "storage_gb" {
  description = "Initial storage (grows to 4x automatically)"
  type        = number
  default     = 200
}

variable "backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)"
  type        = number
  default     = 35
  validation {
    condition     = var.backup_retention_days >= 7
    error_message = "Keep at least 7 days of backups."
  }
}

variable "vpc_id" {
  description = "VPC of the instance"
  type        = string
}

variable "subnet_ids" {
  description = "Private database subnets in at least two availability zones"
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups allowed to connect (EKS nodes)"
  type        = list(string)
}

variable "kms_policy_json" {
  description = "Key policy of the instance's KMS key"
  type        = string
}

variable "tags" {
  description = "Tags on every resource"
  type        = map(string)
  default     = {}
}
