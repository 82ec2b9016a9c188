output "cluster_name" {
  description = "Name of the cluster"
  value       = aws_eks_cluster.this.name
}

output "node_security_group_id" {
  description = "Security group of the cluster (nodes and pods), for the brokers' and the database's ingress rules"
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "oidc_provider_arn" {
  description = "OIDC provider that service-account roles trust"
  value       = aws_iam_openid_connect_provider.this.arn
}

output "oidc_issuer" {
  description = "Issuer URL without the scheme (condition keys of the trust policies)"
  value       = replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
}
