output "kafka_bootstrap" {
  description = "GUARDIAN_KAFKA_BOOTSTRAP for the chart (kafka.bootstrap)"
  value       = module.kafka.bootstrap_brokers_sasl_scram
}

output "database_endpoint" {
  description = "host:port of PostgreSQL (null without a database)"
  value       = try(module.postgres[0].endpoint, null)
}

output "database_arn" {
  description = "ARN of the database (null without one)"
  value       = try(module.postgres[0].arn, null)
}

output "buckets" {
  description = "s3.modelBucket and s3.archiveBucket for the chart"
  value       = module.storage.bucket_names
}

output "bucket_arns" {
  description = "ARN per bucket key"
  value       = module.storage.bucket_arns
}

output "kms_key_arn" {
  description = "KMS key of the buckets"
  value       = module.storage.kms_key_arn
}

output "role_arns" {
  description = "Service-account role per service and hospital"
  value       = module.iam.role_arns
}
