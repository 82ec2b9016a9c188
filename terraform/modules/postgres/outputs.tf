output "endpoint" {
  description = "host:port of the instance"
  value       = aws_db_instance.this.endpoint
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret of the admin password (managed by RDS)"
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "arn" {
  description = "ARN of the instance"
  value       = aws_db_instance.this.arn
}
