variable "region" {
  description = "AWS region"
  type        = string
  default     = "us-east-1"
}

variable "vpc_id" {
  description = "VPC of the environment"
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (EKS, MSK), one per availability zone"
  type        = list(string)
}

variable "database_subnet_ids" {
  description = "Database subnets in at least two availability zones"
  type        = list(string)
}

variable "services" {
  description = "Service principals on the brokers"
  type        = list(string)
  default     = ["accountant", "kpi", "slo", "archiver", "aggregator", "dashboard", "admin", "mirrormaker"]
}

variable "hospitals" {
  description = "Pilot hospital ids"
  type        = list(string)
  default     = ["h001", "h002", "h003", "h004", "h005"]
}

variable "dr_region" {
  description = "AWS region of disaster recovery"
  type        = string
  default     = "us-west-2"
}

variable "dr_vpc_id" {
  description = "VPC in the DR region"
  type        = string
}

variable "dr_private_subnet_ids" {
  description = "Private subnets in the DR region"
  type        = list(string)
}
