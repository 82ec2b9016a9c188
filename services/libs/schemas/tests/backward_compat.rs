//! Every schema change is backward compatible with the previous committed version.
//!
//! Walks the git history of each file in `schemas/`: every committed version must be
//! readable by the next one, and the working-tree file must read the last committed one.
//! Needs git and the repository's history (CI clones it whole).

use std::path::{Path, PathBuf};
use std::process::Command;

use guardian_schemas::compat::check_backward;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..").canonicalize().unwrap()
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(root).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn every_schema_reads_all_its_committed_versions() {
    let root = repo_root();
    assert!(
        git(&root, &["rev-parse", "--git-dir"]).is_some(),
        "the schema history check needs a git checkout at {}",
        root.display()
    );
    let mut files: Vec<_> = std::fs::read_dir(root.join("schemas"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "avsc"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut pairs_checked = 0;
    for file in files {
        let rel = format!("schemas/{}", file.file_name().unwrap().to_string_lossy());
        // Oldest first.
        let commits = git(&root, &["log", "--reverse", "--format=%H", "--", &rel]).unwrap_or_default();
        let mut versions: Vec<(String, String)> = commits
            .lines()
            .filter_map(|c| git(&root, &["show", &format!("{c}:{rel}")]).map(|text| (c[..10].to_string(), text)))
            .collect();
        versions.push(("working tree".to_string(), std::fs::read_to_string(&file).unwrap()));
        for pair in versions.windows(2) {
            let (old_at, old) = &pair[0];
            let (new_at, new) = &pair[1];
            if let Err(e) = check_backward(old, new) {
                panic!("{rel}: the version at {new_at} cannot read data written with the version at {old_at}: {e}");
            }
            pairs_checked += 1;
        }
    }
    eprintln!("checked {pairs_checked} version pairs");
}
