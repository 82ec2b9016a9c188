//! Hospital API tokens: a tokens file keeps only each token's SHA-256 (hex) and the
//! tenant role it reads as; `/api/hospital` answers a bearer token with that role's rows,
//! so row-level security decides what it sees.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::Digest;

use crate::DashboardError;

/// What a tokens file keeps of a token: its SHA-256, in hex.
pub fn digest(token: &str) -> String {
    sha2::Sha256::digest(token.trim().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The tokens file: `[tokens]` "<sha-256 hex>" = "<tenant role>".
pub fn load(path: &Path) -> Result<BTreeMap<String, String>, DashboardError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        tokens: BTreeMap<String, String>,
    }
    let bad = |error: String| DashboardError::Config(format!("{}: {error}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let file: File = toml::from_str(&text).map_err(|e| bad(format!("not a tokens file: {e}")))?;
    for (digest, role) in &file.tokens {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!("{digest:?} is not a SHA-256 in hex")));
        }
        if !guardian_pg::tenancy::valid_role(role) {
            return Err(bad(format!("{role:?} is not a role name")));
        }
    }
    Ok(file.tokens.into_iter().map(|(d, r)| (d.to_ascii_lowercase(), r)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_ignore_surrounding_whitespace_and_files_are_checked() {
        assert_eq!(digest("abc"), digest(" abc\n"));
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let dir = std::env::temp_dir().join(format!("tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, format!("[tokens]\n\"{}\" = \"tenant_h001\"\n", digest("t1").to_uppercase())).unwrap();
        assert_eq!(load(&good).unwrap().get(&digest("t1")).map(String::as_str), Some("tenant_h001"));
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[tokens]\n\"nothex\" = \"tenant_h001\"\n").unwrap();
        assert!(load(&bad).is_err());
    }
}
