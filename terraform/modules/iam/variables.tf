variable "name" {
  description = "Prefix of the role names"
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the guardian release"
  type        = string
  default     = "guardian"
}

variable "release" {
  description = "Helm release name (service accounts are <release>-guardian-<service>)"
  type        = string
  default     = "phoenix"
}

variable "hospitals" {
  description = "Hospital ids with an agent role of their own"
  type        = list(string)
  validation {
    condition     = alltrue([for h in var.hospitals : can(regex("^[a-z0-9-]+$", h))])
    error_message = "Hospital ids are lower-case letters, digits and dashes."
  }
}

variable "bucket_arns" {
  description = "ARN per bucket key (models, archive), from the storage module"
  type        = map(string)
}

variable "kms_key_arn" {
  description = "KMS key of the buckets"
  type        = string
}

variable "oidc_provider_arn" {
  description = "The EKS cluster's OIDC provider"
  type        = string
}

variable "oidc_issuer" {
  description = "Issuer URL without the scheme"
  type        = string
}

variable "tags" {
  description = "Tags on every resource"
  type        = map(string)
  default     = {}
}
