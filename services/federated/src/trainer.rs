//! A site's own trainer, run by the agent once per round (`guardian fl agent --train-cmd`).
//!
//! The agent writes the round's global model to a fresh folder, runs the command through
//! `sh -c` with the paths in its environment, and reads the update the command wrote:
//!
//! | variable | what it is |
//! |---|---|
//! | `GUARDIAN_GLOBAL_MODEL` | the global model to train from (written by the agent) |
//! | `GUARDIAN_UPDATE` | where the trainer writes its update: new weights minus the global model |
//! | `GUARDIAN_FORMAT` | `npy` or `safetensors`, the format of both files |
//! | `GUARDIAN_SESSION`, `GUARDIAN_ROUND`, `GUARDIAN_HOSPITAL` | which round this is |
//!
//! Everything after is the agent's: clipping, noise, quantization, masking, signing and
//! transport. The trainer's output is a tenant's input like any other: it must be exactly
//! the model's length, every value finite, and the command must finish within its timeout
//! (it is killed after) with exit status 0; otherwise the agent sits the round out and
//! says why.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Context, Result, bail, ensure};

/// The file format the trainer reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Npy,
    Safetensors,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Npy => "npy",
            Format::Safetensors => "safetensors",
        }
    }

    fn write(self, values: &[f32]) -> Vec<u8> {
        match self {
            Format::Npy => guardian_fl::npy::write(values),
            Format::Safetensors => guardian_fl::safetensors::write("global", values),
        }
    }

    fn read(self, bytes: &[u8]) -> Result<Vec<f32>> {
        Ok(match self {
            Format::Npy => guardian_fl::npy::read(bytes)?,
            Format::Safetensors => guardian_fl::safetensors::read(bytes)
                .map_err(|e| crate::error::FlError::Invalid(format!("update file: {e}")))?,
        })
    }
}

/// Largest update file read back (a model of 256M float32 parameters).
const MAX_UPDATE_BYTES: u64 = 1 << 30;
/// The end of the trainer's stderr quoted when it fails.
const STDERR_TAIL: usize = 2000;

/// The trainer command of an agent.
#[derive(Debug, Clone)]
pub struct TrainCommand {
    pub command: String,
    pub format: Format,
    pub timeout: Duration,
    /// Each round's folder is made under this one and removed after.
    pub work_dir: PathBuf,
}

/// Which round the trainer runs for.
#[derive(Debug, Clone, Copy)]
pub struct RoundId<'a> {
    pub session: &'a str,
    pub round: i64,
    pub hospital: &'a str,
}

impl TrainCommand {
    /// Runs the trainer on `global` and returns its update (`global.len()` finite values).
    pub async fn train(&self, id: RoundId<'_>, global: &[f32]) -> Result<Vec<f32>> {
        let dir = self.work_dir.join(format!("{}-round-{}", sanitize(id.session), id.round));
        let this = self.clone();
        let (session, hospital, round) = (id.session.to_string(), id.hospital.to_string(), id.round);
        let global = global.to_vec();
        tokio::task::spawn_blocking(move || {
            this.train_in(&dir, RoundId { session: &session, round, hospital: &hospital }, &global)
        })
        .await
        .map_err(|e| crate::error::FlError::Invalid(format!("the trainer's thread: {e}")))?
    }

    fn train_in(&self, dir: &Path, id: RoundId<'_>, global: &[f32]) -> Result<Vec<f32>> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let outcome = self.run_in(dir, id, global);
        let _ = std::fs::remove_dir_all(dir);
        outcome
    }

    fn run_in(&self, dir: &Path, id: RoundId<'_>, global: &[f32]) -> Result<Vec<f32>> {
        let ext = self.format.name();
        let global_path = dir.join(format!("global.{ext}"));
        let update_path = dir.join(format!("update.{ext}"));
        let stderr_path = dir.join("trainer.stderr");
        std::fs::write(&global_path, self.format.write(global))
            .with_context(|| format!("writing {}", global_path.display()))?;
        let stderr =
            std::fs::File::create(&stderr_path).with_context(|| format!("creating {}", stderr_path.display()))?;
        let started = Instant::now();
        // A process group of its own, so a timeout kills what the command started too.
        let mut child = Command::new("sh")
            .process_group(0)
            .arg("-c")
            .arg(&self.command)
            .current_dir(dir)
            .env("GUARDIAN_GLOBAL_MODEL", &global_path)
            .env("GUARDIAN_UPDATE", &update_path)
            .env("GUARDIAN_FORMAT", ext)
            .env("GUARDIAN_SESSION", id.session)
            .env("GUARDIAN_ROUND", id.round.to_string())
            .env("GUARDIAN_HOSPITAL", id.hospital)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting the trainer `{}`", self.command))?;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for the trainer")? {
                break status;
            }
            if started.elapsed() >= self.timeout {
                // `--`: without it, procps-ng 4.0's kill reads `-KILL -1234` as a signal to
                // process group -1, that is to every process the user may signal.
                let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
                let _ = child.kill();
                let _ = child.wait();
                bail!("the trainer did not finish within {} s: killed", self.timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let tail = || {
            let err = std::fs::read(&stderr_path).unwrap_or_default();
            let err = String::from_utf8_lossy(&err[err.len().saturating_sub(STDERR_TAIL)..]).trim().to_string();
            if err.is_empty() { String::new() } else { format!("; its stderr ends: {err}") }
        };
        ensure!(status.success(), "the trainer failed ({status}){}", tail());
        let size = std::fs::metadata(&update_path)
            .map_err(|_| {
                crate::error::FlError::Invalid(format!("the trainer wrote no update to $GUARDIAN_UPDATE{}", tail()))
            })?
            .len();
        ensure!(size <= MAX_UPDATE_BYTES, "the trainer's update is {size} bytes (at most {MAX_UPDATE_BYTES})");
        let update = self
            .format
            .read(&std::fs::read(&update_path).with_context(|| format!("reading {}", update_path.display()))?)?;
        ensure!(
            update.len() == global.len(),
            "the trainer's update has {} values, the model {}",
            update.len(),
            global.len()
        );
        tracing::info!(round = id.round, seconds = started.elapsed().as_secs_f64(), "trainer finished");
        Ok(update)
    }
}

/// A session id as a folder name.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trainer(command: &str, format: Format) -> TrainCommand {
        TrainCommand {
            command: command.into(),
            format,
            timeout: Duration::from_secs(5),
            work_dir: std::env::temp_dir().join(format!("guardian-trainer-test-{}", std::process::id())),
        }
    }

    const ID: RoundId<'static> = RoundId { session: "s/1", round: 3, hospital: "h001" };

    #[tokio::test]
    async fn the_update_comes_back_and_every_lie_is_refused() {
        let global = [0.5f32, -1.0, 2.0];
        // A "trainer" that copies the global model as its update (the same format back).
        for format in [Format::Npy, Format::Safetensors] {
            let t = trainer(
                r#"test "$GUARDIAN_ROUND" = 3 && test "$GUARDIAN_HOSPITAL" = h001 && cp "$GUARDIAN_GLOBAL_MODEL" "$GUARDIAN_UPDATE""#,
                format,
            );
            assert_eq!(t.train(ID, &global).await.unwrap(), global);
        }
        let cases = [
            ("echo broken >&2; exit 3", "the trainer failed (exit status: 3); its stderr ends: broken"),
            ("true", "wrote no update"),
            ("printf 'not a model' > \"$GUARDIAN_UPDATE\"", "not a .npy file"),
            ("sleep 30", "did not finish within 1 s"),
        ];
        // A process of the same user outside the trainer's group, which the timeout's kill
        // must spare.
        let mut bystander = std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        for (command, expected) in cases {
            let mut t = trainer(command, Format::Npy);
            t.timeout = Duration::from_secs(1);
            let err = t.train(ID, &global).await.unwrap_err().to_string();
            assert!(err.contains(expected), "{command}: {err}");
        }
        assert!(bystander.try_wait().unwrap().is_none(), "the timeout killed a process outside the trainer's group");
        let _ = bystander.kill();
        let _ = bystander.wait();
        // An update of the wrong length, and one with a value that is not finite.
        let short = std::env::temp_dir().join(format!("guardian-trainer-short-{}.npy", std::process::id()));
        std::fs::write(&short, guardian_fl::npy::write(&[1.0, 2.0])).unwrap();
        let t = trainer(&format!("cp {} \"$GUARDIAN_UPDATE\"", short.display()), Format::Npy);
        assert!(t.train(ID, &global).await.unwrap_err().to_string().contains("has 2 values, the model 3"));
        std::fs::write(&short, guardian_fl::npy::write(&[1.0, f32::INFINITY, 2.0])).unwrap();
        assert!(t.train(ID, &global).await.unwrap_err().to_string().contains("not finite"));
        let _ = std::fs::remove_file(&short);
        // The round's folder is gone after.
        assert!(!t.work_dir.join("s_1-round-3").exists());
    }
}
