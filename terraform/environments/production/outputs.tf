output "kafka_bootstrap" {
  description = "GUARDIAN_KAFKA_BOOTSTRAP for the chart (kafka.bootstrap)"
  value       = module.kafka.bootstrap_brokers_sasl_scram
}

output "database_endpoint" {
  description = "host:port of PostgreSQL"
  value       = module.postgres.endpoint
}

output "buckets" {
  description = "s3.modelBucket and s3.archiveBucket for the chart"
  value       = module.storage.bucket_names
}

output "role_arns" {
  description = "Service-account role per service and hospital"
  value       = module.iam.role_arns
}

output "dr_kafka_bootstrap" {
  description = "GUARDIAN_KAFKA_DR_BOOTSTRAP (MirrorMaker 2 target, failover destination)"
  value       = module.kafka_dr.bootstrap_brokers_sasl_scram
}
