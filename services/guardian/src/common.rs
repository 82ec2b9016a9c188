//! Glue shared by the subcommands: process plumbing on top of the libraries' start-up
//! pieces, with errors turned into `anyhow` for the command line.

use anyhow::{Context, Result};
use guardian_kafka::admin::Admin;
use guardian_topics::{Catalogue, ServiceId};

use crate::cli::KafkaArgs;

pub fn kafka_catalogue(args: &KafkaArgs) -> Result<Catalogue> {
    Ok(args.catalogue()?)
}

pub async fn admin(args: &KafkaArgs) -> Result<Admin> {
    args.admin(&ServiceId::Ops.client_for("admin")).await.context("kafka")
}

/// A process's plumbing: signal handlers, then `/metrics`, `/healthz` and `/readyz`
/// (plus `extra` routes) on `listen`, announced as `service` to a local Prometheus.
/// Returns the shutdown and the ops endpoint (hold it while the process runs).
pub async fn serve_ops(
    service: &str,
    listen: std::net::SocketAddr,
    extra: Option<axum::Router>,
) -> Result<(guardian_runtime::Shutdown, guardian_runtime::http::Ops)> {
    let shutdown = guardian_runtime::Shutdown::on_signals();
    let ops = guardian_runtime::http::serve_ops(service, listen, extra, &shutdown).await?;
    Ok((shutdown, ops))
}
