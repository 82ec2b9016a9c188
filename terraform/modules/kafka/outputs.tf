output "bootstrap_brokers_sasl_scram" {
  description = "Bootstrap servers of the SASL/SCRAM + TLS listener (port 9096)"
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_scram
}

output "cluster_arn" {
  description = "ARN of the cluster"
  value       = aws_msk_cluster.this.arn
}

output "security_group_id" {
  description = "Security group of the brokers"
  value       = aws_security_group.brokers.id
}

output "principal_secret_arns" {
  description = "Secrets Manager secret of each SCRAM principal (the values are set out of band)"
  value       = { for k, s in aws_secretsmanager_secret.principal : k => s.arn }
}
