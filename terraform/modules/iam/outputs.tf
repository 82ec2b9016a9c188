output "role_arns" {
  description = "Role ARN per service and per hospital agent (annotate the service accounts with them)"
  value       = { for k, r in aws_iam_role.this : k => r.arn }
}
