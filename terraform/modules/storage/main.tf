# Buckets of model versions and of the topic archive. Both: KMS, versioning, no public
# access, TLS-only policy, access logs. The archive keeps audit data for 7 years under
# S3 Object Lock (compliance mode) and moves to Glacier after 90 days; both replicate to
# the DR region's buckets when a destination is given. Hospital objects live under
# hospitals/<id>/ (per-role access in the iam module).

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.60" }
  }
}

locals {
  buckets = {
    models  = "${var.name}-models"
    archive = "${var.name}-archive"
  }
}

resource "aws_kms_key" "objects" {
  description             = "${var.name}: model versions and topic archives"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = var.kms_policy_json
  tags                    = var.tags
}

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_144:access logs stay in their region; the DR region has its own
  #checkov:skip=CKV2_AWS_62:nothing consumes events of access logs
  #checkov:skip=CKV_AWS_18:this is the access-log bucket (logging it into itself would loop)
  bucket        = "${var.name}-access-logs"
  force_destroy = false
  tags          = var.tags
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV2_AWS_62:no consumer of S3 events: the archive manifest and the fl.models topic index the objects
  #checkov:skip=CKV_AWS_144:replication is set per environment (the DR region's buckets are the replicas themselves)
  #checkov:skip=CKV2_AWS_6:false positive: checkov follows for_each to one key only; aws_s3_bucket_public_access_block.all covers every bucket
  #checkov:skip=CKV_AWS_18:false positive as above; aws_s3_bucket_logging.data covers every data bucket
  #checkov:skip=CKV_AWS_21:false positive as above; aws_s3_bucket_versioning.all covers every bucket
  #checkov:skip=CKV_AWS_145:false positive as above; aws_s3_bucket_server_side_encryption_configuration.all covers every bucket
  #checkov:skip=CKV2_AWS_61:false positive as above; both data buckets have a lifecycle configuration
  for_each            = local.buckets
  bucket              = each.value
  object_lock_enabled = each.key == "archive"
  force_destroy       = false
  tags                = merge(var.tags, { purpose = each.key })
}

resource "aws_s3_bucket_public_access_block" "all" {
  for_each                = merge({ for k, b in aws_s3_bucket.this : k => b.id }, { logs = aws_s3_bucket.logs.id })
  bucket                  = each.value
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "all" {
  for_each = merge({ for k, b in aws_s3_bucket.this : k => b.id }, { logs = aws_s3_bucket.logs.id })
  bucket   = each.value
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "all" {
  for_each = merge({ for k, b in aws_s3_bucket.this : k => b.id }, { logs = aws_s3_bucket.logs.id })
  bucket   = each.value
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.objects.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_logging" "data" {
  for_each      = aws_s3_bucket.this
  bucket        = each.value.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "${each.key}/"
}

# Audit retention: every archived segment and manifest is immutable for 7 years.
resource "aws_s3_bucket_object_lock_configuration" "archive" {
  bucket = aws_s3_bucket.this["archive"].id
  rule {
    default_retention {
      mode  = "COMPLIANCE"
      years = var.archive_retention_years
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "archive" {
  bucket = aws_s3_bucket.this["archive"].id
  rule {
    id     = "audit-archive"
    status = "Enabled"
    filter {}
    transition {
      days          = 90
      storage_class = "GLACIER_IR"
    }
    expiration {
      days = var.archive_retention_years * 366
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "models" {
  bucket = aws_s3_bucket.this["models"].id
  rule {
    id     = "model-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 90
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    id     = "access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = 400
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_iam_policy_document" "tls_only" {
  for_each = merge({ for k, b in aws_s3_bucket.this : k => b.arn }, { logs = aws_s3_bucket.logs.arn })
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [each.value, "${each.value}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "tls_only" {
  for_each = merge({ for k, b in aws_s3_bucket.this : k => b.id }, { logs = aws_s3_bucket.logs.id })
  bucket   = each.value
  policy   = data.aws_iam_policy_document.tls_only[each.key].json
}

# Cross-region replication of both data buckets to the DR region.
resource "aws_s3_bucket_replication_configuration" "dr" {
  for_each = var.replication_role_arn == null ? {} : aws_s3_bucket.this
  bucket   = each.value.id
  role     = var.replication_role_arn
  rule {
    id     = "to-dr-region"
    status = "Enabled"
    filter {}
    delete_marker_replication {
      status = "Enabled"
    }
    source_selection_criteria {
      sse_kms_encrypted_objects {
        status = "Enabled"
      }
    }
    destination {
      bucket        = var.replica_bucket_arns[each.key]
      storage_class = "STANDARD"
      encryption_configuration {
        replica_kms_key_id = var.replica_kms_key_arn
      }
    }
  }
  depends_on = [aws_s3_bucket_versioning.all]
}
