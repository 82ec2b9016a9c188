//! Announcing a service's `/metrics` to a Prometheus that discovers targets from files
//! (`file_sd_configs`), as the local stack's does: with [`SD_DIR_ENV`] set, each service
//! process writes `<dir>/<service>-<pid>.json` once its ops endpoint listens and removes
//! it when it stops. A process killed outright leaves its file behind (Prometheus then
//! reports the target down, as it should); the next registration in the folder removes
//! the files of processes that no longer exist.
//!
//! On Kubernetes, Prometheus finds the pods through the chart's annotations instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The folder of target files, when a local Prometheus watches one.
pub const SD_DIR_ENV: &str = "GUARDIAN_PROMETHEUS_SD_DIR";

/// A target file, removed when dropped (or by [`Registration::remove`]).
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
}

impl Registration {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the target out of discovery now (idempotent).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The target file's content: one target, labelled with the service and the process.
fn target_json(service: &str, bound: SocketAddr) -> String {
    // A wildcard listener is scraped on loopback: the file serves a Prometheus on this host.
    let host = if bound.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { bound.ip() };
    let target = SocketAddr::new(host, bound.port());
    serde_json::json!([{
        "targets": [target.to_string()],
        "labels": { "service": service, "pid": std::process::id().to_string() },
    }])
    .to_string()
}

/// The process id a target file was written by, from its name (`<service>-<pid>.json`).
fn writer_pid(name: &str) -> Option<u32> {
    name.strip_suffix(".json")?.rsplit_once('-')?.1.parse().ok()
}

/// Removes the target files whose process is gone (Linux: no `/proc/<pid>`).
fn prune(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some(pid) = name.to_str().and_then(writer_pid)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes this process's target file into `dir` (atomically: Prometheus never reads half
/// a file), after removing the files of processes that are gone.
pub fn register(dir: &Path, service: &str, bound: SocketAddr) -> std::io::Result<Registration> {
    std::fs::create_dir_all(dir)?;
    prune(dir);
    let path = dir.join(format!("{service}-{}.json", std::process::id()));
    let tmp = dir.join(format!(".{service}-{}.json.tmp", std::process::id()));
    std::fs::write(&tmp, target_json(service, bound))?;
    std::fs::rename(&tmp, &path)?;
    Ok(Registration { path })
}

/// [`register`] into the folder [`SD_DIR_ENV`] names, if it names one. A failure is
/// logged, never fatal: discovery is for the operator's convenience.
pub fn register_from_env(service: &str, bound: SocketAddr) -> Option<Registration> {
    let dir = std::env::var_os(SD_DIR_ENV).filter(|d| !d.is_empty())?;
    match register(Path::new(&dir), service, bound) {
        Ok(r) => Some(r),
        Err(error) => {
            tracing::warn!(%error, dir = %Path::new(&dir).display(), "metrics endpoint not announced to Prometheus");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_file_names_the_service_and_is_removed_with_it() {
        let dir = std::env::temp_dir().join(format!("guardian-sd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A file left by a process that cannot exist (pid above the kernel's maximum) and
        // one by this process under another service name.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kpi-4194305.json"), "[]").unwrap();
        let other = dir.join(format!("slo-{}.json", std::process::id()));
        std::fs::write(&other, "[]").unwrap();

        let r = register(&dir, "accountant", "0.0.0.0:9464".parse().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(r.path()).unwrap()).unwrap();
        assert_eq!(v[0]["targets"][0], "127.0.0.1:9464");
        assert_eq!(v[0]["labels"]["service"], "accountant");
        assert_eq!(v[0]["labels"]["pid"], std::process::id().to_string());
        assert!(!dir.join("kpi-4194305.json").exists(), "the dead process's file is pruned");
        assert!(other.exists(), "a live process's file stays");
        let path = r.path().to_path_buf();
        drop(r);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_files_named_after_a_process_are_pruned() {
        assert_eq!(writer_pid("fl-agent-123.json"), Some(123));
        assert_eq!(writer_pid("notes.txt"), None);
        assert_eq!(writer_pid("static.json"), None);
    }
}
