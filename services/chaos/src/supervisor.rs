//! The runner's process supervisor: each supervised service is a `guardian` process
//! started from its config file, restarted when it exits on its own (as an orchestrator
//! would), its stderr appended to a log beside the report; readiness is its `/readyz`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A supervised service process: restarted when it exits on its own (as an orchestrator
/// would), its stderr appended to `log`.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    /// For reports: the name, with the hospital for agents.
    pub label: String,
    pub args: Vec<String>,
    pub listen: String,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// Exits the runner did not cause, with their status.
    pub crashes: Vec<String>,
    /// False for a process that ends by design (the aggregator of a session): never
    /// restarted, its exit is its outcome.
    pub restart: bool,
    /// How a process that is not restarted ended.
    pub ended: Option<String>,
}

impl Service {
    pub fn spawn(&mut self) -> Result<u32> {
        let child = Command::new(std::env::current_exe()?)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .with_context(|| format!("opening {}", self.log.display()))?,
            )
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        let pid = child.id();
        self.child = Some(child);
        Ok(pid)
    }

    /// Restarts the process if it exited by itself; returns how it ended.
    pub fn supervise(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        if !self.restart {
            self.ended = Some(format!("exited ({status})"));
            return Some(format!("{} exited ({status})", self.name));
        }
        let note = format!("{} exited by itself ({status}), restarted", self.name);
        self.crashes.push(note.clone());
        if let Err(e) = self.spawn() {
            self.crashes.push(format!("{}: restart failed: {e:#}", self.name));
        }
        Some(note)
    }

    pub fn kill(&mut self) -> Option<u32> {
        let mut child = self.child.take()?;
        let pid = child.id();
        let _ = child.kill();
        let _ = child.wait();
        Some(pid)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn ready(&self) -> bool {
        // A process without probes (the aggregator) counts as ready.
        self.listen.is_empty() || http_status(&self.listen, "/readyz") == Some(200)
    }
}

fn http_status(addr: &str, path: &str) -> Option<u16> {
    guardian_runtime::http::get_blocking(addr, path).map(|(status, _)| status)
}

pub fn free_listen() -> Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

/// Restarts every service that exited by itself.
pub fn supervise(services: &Arc<Mutex<Vec<Service>>>) {
    for s in services.lock().expect("services").iter_mut() {
        if let Some(note) = s.supervise() {
            eprintln!("chaos: {note}");
        }
    }
}

pub async fn wait_ready(services: &Arc<Mutex<Vec<Service>>>, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        supervise(services);
        if ready_all(services) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

pub fn ready_all(services: &Arc<Mutex<Vec<Service>>>) -> bool {
    services.lock().expect("services").iter().all(Service::ready)
}
