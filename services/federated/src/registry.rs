//! Identity keys: each hospital and the aggregator sign with an Ed25519 key; the registry
//! (a TOML file distributed to every party) names the public key of each.
//!
//! ```toml
//! aggregator = "<hex Ed25519 public key>"
//! [hospitals]
//! h001 = "<hex Ed25519 public key>"
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::error::{Context, Result, bail};
use ed25519_dalek::{SigningKey, VerifyingKey};
use guardian_kafka::signing::hex;
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct Registry {
    pub aggregator: VerifyingKey,
    pub hospitals: BTreeMap<String, VerifyingKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    aggregator: String,
    hospitals: BTreeMap<String, String>,
}

fn unhex32(s: &str) -> Result<[u8; 32]> {
    guardian_kafka::signing::unhex32(s).map_err(crate::error::FlError::Invalid)
}

fn verifying(s: &str, what: &str) -> Result<VerifyingKey> {
    VerifyingKey::from_bytes(&unhex32(s).with_context(|| format!("key of {what}"))?)
        .with_context(|| format!("key of {what} is not an Ed25519 public key"))
}

impl Registry {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the registry {}", path.display()))?;
        let file: RegistryFile =
            toml::from_str(&text).with_context(|| format!("{}: not a registry file", path.display()))?;
        let aggregator = verifying(&file.aggregator, "the aggregator")?;
        let hospitals = file
            .hospitals
            .iter()
            .map(|(h, k)| Ok((h.clone(), verifying(k, h)?)))
            .collect::<Result<BTreeMap<_, _>>>()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(Registry { aggregator, hospitals })
    }

    /// The verifying keys of `participants`, in order.
    pub fn directory(&self, participants: &[String]) -> Result<Vec<VerifyingKey>> {
        participants
            .iter()
            .map(|h| self.hospitals.get(h).copied().with_context(|| format!("hospital {h} is not in the registry")))
            .collect()
    }
}

/// Reads a signing key file (64 hex digits).
pub fn load_identity(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the identity key {}", path.display()))?;
    Ok(SigningKey::from_bytes(&unhex32(&text).with_context(|| format!("{}: not an identity key", path.display()))?))
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// Creates `aggregator.key`, one `<hospital>.key` per hospital (mode 0600) and
/// `registry.toml` in `dir`. Never overwrites a key.
pub fn keygen(dir: &Path, hospitals: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut rng = rand::rngs::OsRng;
    let mut fresh = |name: &str| -> Result<VerifyingKey> {
        let mut secret = [0u8; 32];
        rand::TryRngCore::try_fill_bytes(&mut rng, &mut secret).context("the OS random number generator")?;
        let key = SigningKey::from_bytes(&secret);
        write_new(&dir.join(format!("{name}.key")), &format!("{}\n", hex(&secret)))?;
        Ok(key.verifying_key())
    };
    let aggregator = fresh("aggregator")?;
    let mut file = RegistryFile { aggregator: hex(aggregator.as_bytes()), hospitals: BTreeMap::new() };
    for h in hospitals {
        if h.is_empty() || h.contains(['/', '\\', '.']) || h == "aggregator" {
            bail!("'{h}' cannot be a hospital id (no '/', '\\', '.', not 'aggregator')");
        }
        file.hospitals.insert(h.clone(), hex(fresh(h)?.as_bytes()));
    }
    let mut text = format!(
        "# Public keys of the federation's parties (guardian fl keygen). Distribute to every party.\naggregator = \"{}\"\n\n[hospitals]\n",
        file.aggregator
    );
    for (h, k) in &file.hospitals {
        text.push_str(&format!("{h} = \"{k}\"\n"));
    }
    write_new(&dir.join("registry.toml"), &text)
}
