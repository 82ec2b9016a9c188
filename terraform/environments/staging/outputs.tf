output "platform" {
  description = "Endpoints, buckets and roles for the chart's values"
  value = {
    kafka_bootstrap   = module.platform.kafka_bootstrap
    database_endpoint = module.platform.database_endpoint
    buckets           = module.platform.buckets
    role_arns         = module.platform.role_arns
  }
}
