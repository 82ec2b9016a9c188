//! Who is asking: the dashboard's credentials.
//!
//! Without a credential a request sees what the aggregate role may read (k-anonymous
//! groups and trends). A tokens file grants more, keeping only each token's SHA-256:
//!
//! ```toml
//! [tokens]      # hospital API tokens: their tenant role (`guardian db role api-token`)
//! "<sha-256 hex>" = "tenant_h001"
//! [operators]   # operator tokens: a name for the logs (`guardian db role operator-token`)
//! "<sha-256 hex>" = "ops-oncall"
//! ```
//!
//! A hospital token reads its own rows through `/api/hospital` as its tenant role (row-level
//! security decides); an operator token reads the per-hospital comparison, the budgets and
//! the operations panels. A presented token is hashed and compared with every known digest
//! in constant time (no early exit), so response times tell nothing about the digests.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::Digest;

use crate::DashboardError;

/// What a tokens file keeps of a token: its SHA-256, in hex.
pub fn digest(token: &str) -> String {
    hex(&sha256(token))
}

fn sha256(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.trim().as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (256 bits, hex).
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// What a credential grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A hospital's tenant role.
    Tenant(String),
    /// An operator (by name).
    Operator(String),
}

/// The known credentials.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    known: Vec<([u8; 32], Grant)>,
}

/// Equality of two digests in constant time.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Credentials {
    /// What `token` grants, if anything: every known digest is compared.
    pub fn grant(&self, token: &str) -> Option<Grant> {
        let presented = sha256(token);
        let mut found = None;
        for (d, grant) in &self.known {
            if same(d, &presented) && found.is_none() {
                found = Some(grant.clone());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The tokens file (see the module's documentation).
    pub fn load(path: &Path) -> Result<Self, DashboardError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            tokens: BTreeMap<String, String>,
            #[serde(default)]
            operators: BTreeMap<String, String>,
        }
        let bad = |error: String| DashboardError::Config(format!("{}: {error}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let file: File = toml::from_str(&text).map_err(|e| bad(format!("not a tokens file: {e}")))?;
        let parse = |d: &str| -> Result<[u8; 32], DashboardError> {
            let d = d.to_ascii_lowercase();
            if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("{d:?} is not a SHA-256 in hex")));
            }
            let mut out = [0u8; 32];
            for (i, o) in out.iter_mut().enumerate() {
                *o = u8::from_str_radix(&d[2 * i..2 * i + 2], 16).expect("checked hex");
            }
            Ok(out)
        };
        let mut known = Vec::new();
        for (d, role) in &file.tokens {
            if !guardian_pg::tenancy::valid_role(role) {
                return Err(bad(format!("{role:?} is not a role name")));
            }
            known.push((parse(d)?, Grant::Tenant(role.clone())));
        }
        for (d, name) in &file.operators {
            if name.is_empty() || name.len() > 64 {
                return Err(bad(format!("operator name {name:?} must have 1 to 64 characters")));
            }
            known.push((parse(d)?, Grant::Operator(name.clone())));
        }
        let mut digests: Vec<&[u8; 32]> = known.iter().map(|k| &k.0).collect();
        digests.sort();
        if digests.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad("a token digest is listed twice".into()));
        }
        Ok(Credentials { known })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_grant_tenants_and_operators_and_are_checked() {
        assert_eq!(digest("abc"), digest(" abc\n"));
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let dir = std::env::temp_dir().join(format!("tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            format!(
                "[tokens]\n\"{}\" = \"tenant_h001\"\n[operators]\n\"{}\" = \"oncall\"\n",
                digest("t1").to_uppercase(),
                digest("op")
            ),
        )
        .unwrap();
        let c = Credentials::load(&good).unwrap();
        assert_eq!(c.grant("t1"), Some(Grant::Tenant("tenant_h001".into())));
        assert_eq!(c.grant("op"), Some(Grant::Operator("oncall".into())));
        assert_eq!(c.grant("t2"), None);
        assert_eq!(c.grant(""), None);
        for (name, text) in [
            ("bad", "[tokens]\n\"nothex\" = \"tenant_h001\"\n".to_string()),
            ("role", format!("[tokens]\n\"{}\" = \"Robert'); DROP\"\n", digest("x"))),
            ("twice", format!("[tokens]\n\"{0}\" = \"tenant_h001\"\n[operators]\n\"{0}\" = \"o\"\n", digest("x"))),
            ("unknown", "[admins]\n".to_string()),
        ] {
            let p = dir.join(format!("{name}.toml"));
            std::fs::write(&p, text).unwrap();
            assert!(Credentials::load(&p).is_err(), "{name}");
        }
        assert_eq!(new_token().len(), 64);
        assert_ne!(new_token(), new_token());
        assert!(same(&sha256("a"), &sha256("a")) && !same(&sha256("a"), &sha256("b")));
    }
}
