//! The report of one run: hypotheses with their verdicts, faults with their times, the
//! measurements; as JSON and as Markdown.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// Milliseconds after the traffic started.
    pub at_ms: u64,
    pub kind: String,
    pub target: String,
    /// What happened (e.g. "pid 123 killed, restarted after 300 ms").
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hypothesis {
    pub name: String,
    pub statement: String,
    /// Checked before the faults (steady state), when applicable.
    pub before: Option<bool>,
    pub holds: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub experiment: String,
    pub description: String,
    pub seed: u64,
    /// Wall clock of the start, ms since the epoch.
    pub started_at_ms: i64,
    pub duration_ms: u64,
    pub faults: Vec<Fault>,
    pub hypotheses: Vec<Hypothesis>,
    /// Named counts and times (records in, records accounted, lag, recovery time...).
    pub measurements: Vec<(String, serde_json::Value)>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.hypotheses.iter().all(|h| h.holds && h.before != Some(false))
    }

    pub fn violations(&self) -> usize {
        self.hypotheses.iter().filter(|h| !h.holds || h.before == Some(false)).count()
    }

    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("plain data");
        v["verdict"] = serde_json::Value::from(if self.passed() { "passed" } else { "failed" });
        v["violations"] = serde_json::Value::from(self.violations());
        serde_json::to_string_pretty(&v).expect("plain data")
    }

    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        md.push_str(&format!("# Chaos run: {} ({verdict})\n\n{}\n\n", self.experiment, self.description));
        md.push_str(&format!(
            "Seed {}, {:.1} s, {} fault(s), {} violation(s).\n\n",
            self.seed,
            self.duration_ms as f64 / 1000.0,
            self.faults.len(),
            self.violations()
        ));
        md.push_str("## Hypotheses\n\n| hypothesis | before | after | detail |\n|---|---|---|---|\n");
        for h in &self.hypotheses {
            let mark = |b: bool| if b { "holds" } else { "**violated**" };
            md.push_str(&format!(
                "| {}: {} | {} | {} | {} |\n",
                h.name,
                h.statement,
                h.before.map_or("-", mark),
                mark(h.holds),
                h.detail.replace('|', "\\|")
            ));
        }
        md.push_str("\n## Faults\n\n| at (s) | fault | target | what happened |\n|---|---|---|---|\n");
        for f in &self.faults {
            md.push_str(&format!(
                "| {:.1} | {} | {} | {} |\n",
                f.at_ms as f64 / 1000.0,
                f.kind,
                if f.target.is_empty() { "-" } else { &f.target },
                f.detail
            ));
        }
        md.push_str("\n## Measurements\n\n| measurement | value |\n|---|---|\n");
        for (k, v) in &self.measurements {
            match v.as_str() {
                Some(text) => md.push_str(&format!("| {k} | {text} |\n")),
                None => md.push_str(&format!("| {k} | {v} |\n")),
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_violation_fails_the_run_and_shows_in_both_forms() {
        let mut r = Report {
            experiment: "x".into(),
            description: "d".into(),
            seed: 1,
            started_at_ms: 0,
            duration_ms: 1500,
            faults: vec![Fault {
                at_ms: 2500,
                kind: "kill-service".into(),
                target: "kpi".into(),
                detail: "pid 1".into(),
            }],
            hypotheses: vec![Hypothesis {
                name: "a".into(),
                statement: "s".into(),
                before: Some(true),
                holds: true,
                detail: "ok".into(),
            }],
            measurements: vec![("records".into(), 5.into())],
        };
        assert!(r.passed());
        assert!(r.to_json().contains("\"verdict\": \"passed\""));
        r.hypotheses.push(Hypothesis {
            name: "b".into(),
            statement: "s".into(),
            before: None,
            holds: false,
            detail: "2 | 3".into(),
        });
        assert!(!r.passed() && r.violations() == 1);
        assert!(r.to_json().contains("\"verdict\": \"failed\""));
        let md = r.to_markdown();
        assert!(
            md.contains("(FAILED)")
                && md.contains("**violated**")
                && md.contains("2 \\| 3")
                && md.contains("| 2.5 | kill-service | kpi |")
        );
    }
}
