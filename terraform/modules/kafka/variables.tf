variable "name" {
  description = "Cluster name (also the prefix of its KMS key, log group and secrets)"
  type        = string
}

variable "kafka_version" {
  description = "MSK Kafka version"
  type        = string
  default     = "3.8.x"
}

variable "broker_count" {
  description = "Brokers (a multiple of the number of subnets)"
  type        = number
  default     = 3
}

variable "instance_type" {
  description = "Broker instance type"
  type        = string
  default     = "kafka.m7g.large"
}

variable "volume_size_gb" {
  description = "EBS storage per broker"
  type        = number
  default     = 500
}

variable "vpc_id" {
  description = "VPC of the brokers"
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per availability zone"
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups allowed to reach the brokers (EKS nodes, MirrorMaker 2)"
  type        = list(string)
}

variable "principals" {
  description = "SCRAM user names: one per service and per hospital agent"
  type        = list(string)
}

variable "kms_policy_json" {
  description = "Key policy of the cluster's KMS key"
  type        = string
}

variable "log_retention_days" {
  description = "Days broker logs are kept"
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags on every resource"
  type        = map(string)
  default     = {}
}
