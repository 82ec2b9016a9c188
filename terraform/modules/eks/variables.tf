variable "name" {
  description = "Cluster name"
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes version of the control plane"
  type        = string
  default     = "1.33"
}

variable "subnet_ids" {
  description = "Private subnets of the control plane's interfaces and the nodes"
  type        = list(string)
}

variable "node_instance_types" {
  description = "Instance types of the managed node group"
  type        = list(string)
  default     = ["m7g.large"]
}

variable "node_min" {
  description = "Fewest nodes"
  type        = number
  default     = 3
}

variable "node_max" {
  description = "Most nodes"
  type        = number
  default     = 9
}

variable "kms_policy_json" {
  description = "Key policy of the cluster's KMS key"
  type        = string
}

variable "log_retention_days" {
  description = "Days control-plane logs are kept"
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags on every resource"
  type        = map(string)
  default     = {}
}
