//! CPU time as Linux accounts it: a process's (all its threads, from `/proc/<pid>/stat`)
//! and the whole machine's (every core's busy time, from `/proc/stat`).

use std::time::Duration;

/// Clock ticks per second of `/proc` (USER_HZ): `getconf CLK_TCK`, 100 when it cannot say.
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// User plus system time of process `pid` so far, threads included.
pub fn process(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / ticks_per_second()))
}

/// Busy time of every core together so far (user, nice, system, irq, softirq, steal).
pub fn machine() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already)
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).copied().unwrap_or(0);
    Some(Duration::from_secs_f64(busy as f64 / ticks_per_second()))
}

/// The machine's busy time from one moment on.
#[derive(Debug, Clone, Copy)]
pub struct Busy(Option<Duration>);

impl Busy {
    pub fn start() -> Self {
        Busy(machine())
    }

    /// Cores kept busy on average since [`Busy::start`], over a measurement that took
    /// `took` (0 when `/proc/stat` could not be read).
    pub fn cores_over(&self, took: Duration) -> f64 {
        match (machine(), self.0) {
            (Some(now), Some(then)) => now.saturating_sub(then).as_secs_f64() / took.as_secs_f64().max(1e-9),
            _ => 0.0,
        }
    }
}

/// A process's and the machine's CPU time at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub process: Duration,
    pub machine: Duration,
}

impl Sample {
    pub fn of(pid: u32) -> Option<Sample> {
        Some(Sample { process: process(pid)?, machine: machine()? })
    }

    /// CPU-seconds per million records between `self` and a later sample.
    pub fn per_million(&self, later: &Sample, records: f64) -> (f64, f64) {
        let m = records.max(1.0) / 1e6;
        (
            (later.process.saturating_sub(self.process)).as_secs_f64() / m,
            (later.machine.saturating_sub(self.machine)).as_secs_f64() / m,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_time_that_grows() {
        let me = std::process::id();
        let before = process(me).expect("own stat");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process(me).expect("own stat");
        assert!(after > before, "{before:?} then {after:?}");
        assert!(after - before <= Duration::from_millis(600), "{before:?} then {after:?}");
        assert!(machine().expect("/proc/stat") >= after - before);
        // One core spinning keeps at least a good part of one core busy.
        let busy = Busy::start();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let cores = busy.cores_over(start.elapsed());
        assert!(cores > 0.3, "{cores} cores busy while spinning");
    }
}
