output "primary" {
  description = "Endpoints, buckets and roles of the primary region, for the chart's values"
  value = {
    kafka_bootstrap   = module.primary.kafka_bootstrap
    database_endpoint = module.primary.database_endpoint
    buckets           = module.primary.buckets
    role_arns         = module.primary.role_arns
  }
}

output "dr" {
  description = "The DR region: GUARDIAN_KAFKA_DR_BOOTSTRAP, replica buckets, roles"
  value = {
    kafka_bootstrap = module.dr.kafka_bootstrap
    buckets         = module.dr.buckets
    role_arns       = module.dr.role_arns
  }
}
