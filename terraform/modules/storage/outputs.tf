output "bucket_arns" {
  description = "ARN per bucket key (models, archive)"
  value       = { for k, b in aws_s3_bucket.this : k => b.arn }
}

output "bucket_names" {
  description = "Name per bucket key (models, archive)"
  value       = { for k, b in aws_s3_bucket.this : k => b.id }
}

output "kms_key_arn" {
  description = "KMS key of the buckets"
  value       = aws_kms_key.objects.arn
}
