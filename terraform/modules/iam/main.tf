# IAM roles for service accounts: one role per guardian service and one per hospital
# agent, each trusted only by its own Kubernetes service account, each with the least S3
# access its job needs. A hospital reaches only hospitals/<its id>/ of the models bucket
# (plus the published model versions, read-only); no role may delete archived audit data.

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.60" }
  }
}

locals {
  models  = var.bucket_arns["models"]
  archive = var.bucket_arns["archive"]

  # What each service may do in S3 (bucket-level List is added per bucket below).
  services = {
    archiver = {
      read  = ["${local.archive}/archive/*"]
      write = ["${local.archive}/archive/*"]
      list  = [local.archive]
    }
    restore = {
      read  = ["${local.archive}/archive/*"]
      write = []
      list  = [local.archive]
    }
    aggregator = {
      read  = ["${local.models}/models/*"]
      write = ["${local.models}/models/*"]
      list  = [local.models]
    }
    accountant = { read = [], write = [], list = [] }
    kpi        = { read = [], write = [], list = [] }
    slo        = { read = [], write = [], list = [] }
    dashboard  = { read = [], write = [], list = [] }
  }

  hospitals = {
    for h in var.hospitals : "hospital-${h}" => {
      read  = ["${local.models}/models/*", "${local.models}/hospitals/${h}/*"]
      write = ["${local.models}/hospitals/${h}/*"]
      list  = [local.models]
      # ListBucket only under the hospital's own prefix and the published models.
      prefixes = ["hospitals/${h}/*", "models/*"]
    }
  }

  roles = merge(
    { for k, v in local.services : k => merge(v, { prefixes = ["*"] }) },
    local.hospitals,
  )
}

data "aws_iam_policy_document" "trust" {
  for_each = local.roles
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.release}-guardian-${each.key}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "access" {
  for_each = { for k, v in local.roles : k => v if length(v.read) + length(v.write) > 0 }
  statement {
    sid       = "Read"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = each.value.read
  }
  dynamic "statement" {
    for_each = length(each.value.write) > 0 ? [1] : []
    content {
      sid       = "Write"
      actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
      resources = each.value.write
    }
  }
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket"]
    resources = each.value.list
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = each.value.prefixes
    }
  }
  statement {
    sid       = "UseTheBucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
  statement {
    sid       = "NeverDeleteAuditData"
    effect    = "Deny"
    actions   = ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectRetention", "s3:BypassGovernanceRetention"]
    resources = ["${local.archive}/*"]
  }
}

resource "aws_iam_role" "this" {
  for_each             = local.roles
  name                 = "${var.name}-${each.key}"
  assume_role_policy   = data.aws_iam_policy_document.trust[each.key].json
  max_session_duration = 3600
  tags                 = merge(var.tags, { service = each.key })
}

resource "aws_iam_role_policy" "access" {
  for_each = data.aws_iam_policy_document.access
  name     = "s3-access"
  role     = aws_iam_role.this[each.key].id
  policy   = each.value.json
}
