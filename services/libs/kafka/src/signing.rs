//! Signed hospital events: an agent signs each record it publishes with its Ed25519
//! identity key (the one `guardian fl keygen` makes and `registry.toml` lists); consumers
//! given the registry verify that the record's hospital is the signer and that the
//! signature holds, and dead-letter every record that is unsigned, forged or altered.
//!
//! Two headers carry it: `guardian-signer` (the hospital id) and `guardian-signature`
//! (64 bytes). The signed message binds the topic's role (not its name: a record
//! replayed into a prefixed or restored topic still verifies, one moved to a topic of
//! another role does not), the signer, the key and the payload, with a domain tag.

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rdkafka::message::{Headers, Message};

pub const SIGNER_HEADER: &str = "guardian-signer";
pub const SIGNATURE_HEADER: &str = "guardian-signature";
/// The dead-letter kind of an unsigned, forged or altered record.
pub const FORGED: &str = "forged";
const DOMAIN: &[u8] = b"phoenix-guardian/event-signature/v1";

/// The bytes an agent signs.
pub fn signed_message(role: &str, signer: &str, key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + role.len() + signer.len() + key.len() + payload.len() + 16);
    for part in [DOMAIN, role.as_bytes(), signer.as_bytes(), key] {
        m.extend_from_slice(&(part.len() as u32).to_be_bytes());
        m.extend_from_slice(part);
    }
    m.extend_from_slice(payload);
    m
}

/// The two headers of a record `signer` publishes to a topic of `role`.
pub fn sign(identity: &SigningKey, signer: &str, role: &str, key: &[u8], payload: &[u8]) -> [(String, Vec<u8>); 2] {
    let signature = identity.sign(&signed_message(role, signer, key, payload));
    [
        (SIGNER_HEADER.to_string(), signer.as_bytes().to_vec()),
        (SIGNATURE_HEADER.to_string(), signature.to_bytes().to_vec()),
    ]
}

/// A hospital agent's signer for one topic role.
#[derive(Debug, Clone)]
pub struct EventSigner {
    pub hospital: String,
    pub role: &'static str,
    key: SigningKey,
}

impl EventSigner {
    pub fn new(hospital: impl Into<String>, role: &'static str, key: SigningKey) -> Self {
        EventSigner { hospital: hospital.into(), role, key }
    }

    /// The record headers carrying the signature over `key` and `payload`.
    pub fn headers(&self, key: &[u8], payload: &[u8]) -> rdkafka::message::OwnedHeaders {
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (k, v) in sign(&self.key, &self.hospital, self.role, key, payload) {
            headers = headers.insert(rdkafka::message::Header { key: &k, value: Some(&v) });
        }
        headers
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from 64 hex digits.
pub fn unhex32(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("expected 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

/// The hospitals' public keys, for verification.
#[derive(Debug, Clone, Default)]
pub struct Signers {
    keys: BTreeMap<String, VerifyingKey>,
}

impl Signers {
    pub fn new(keys: BTreeMap<String, VerifyingKey>) -> Self {
        Signers { keys }
    }

    /// The `[hospitals]` table of a registry file (`guardian fl keygen`'s registry.toml).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let value: toml::Table = text.parse().map_err(|e| format!("{}: not TOML: {e}", path.display()))?;
        let table = value
            .get("hospitals")
            .and_then(|h| h.as_table())
            .ok_or_else(|| format!("{}: no [hospitals] table", path.display()))?;
        let mut keys = BTreeMap::new();
        for (h, k) in table {
            let k = k.as_str().ok_or_else(|| format!("{}: key of {h} is not a string", path.display()))?;
            let bytes = unhex32(k).map_err(|e| format!("{}: key of {h}: {e}", path.display()))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| format!("{}: key of {h} is not an Ed25519 public key", path.display()))?;
            keys.insert(h.clone(), key);
        }
        Ok(Signers { keys })
    }

    /// The registry at `path`, when one is given; a registry without keys is an error
    /// (every record would be dead-lettered).
    pub fn load_optional(path: Option<&Path>) -> Result<Option<Self>, String> {
        let Some(path) = path else { return Ok(None) };
        let signers = Signers::load(path)?;
        if signers.is_empty() {
            return Err(format!("{}: no hospital keys: every record would be dead-lettered", path.display()));
        }
        tracing::info!(hospitals = signers.len(), registry = %path.display(), "records must be signed by their hospital");
        Ok(Some(signers))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks that `msg` (from a topic of `role`) is signed by `hospital`. The error says
    /// why not, for the dead-letter record.
    pub fn verify<M: Message>(&self, msg: &M, role: &str, hospital: &str) -> Result<(), String> {
        let header = |name: &str| -> Option<&[u8]> {
            let headers = msg.headers()?;
            headers.iter().find(|h| h.key == name).and_then(|h| h.value)
        };
        self.verify_parts(
            role,
            hospital,
            msg.key().unwrap_or_default(),
            msg.payload().unwrap_or_default(),
            header(SIGNER_HEADER),
            header(SIGNATURE_HEADER),
        )
    }

    /// [`Signers::verify`] as a dead-letter decision (kind [`FORGED`]).
    pub fn check<M: Message>(&self, msg: &M, role: &str, hospital: &str) -> Result<(), crate::ProcessError> {
        self.verify(msg, role, hospital).map_err(|why| crate::ProcessError::poison(FORGED, why))
    }

    /// [`Signers::verify`] on a record already read ([`crate::reader::Incoming`]).
    pub fn verify_incoming(&self, msg: &crate::reader::Incoming, role: &str, hospital: &str) -> Result<(), String> {
        let header = |name: &str| msg.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref());
        self.verify_parts(
            role,
            hospital,
            msg.key.as_deref().unwrap_or_default(),
            &msg.payload,
            header(SIGNER_HEADER),
            header(SIGNATURE_HEADER),
        )
    }

    fn verify_parts(
        &self,
        role: &str,
        hospital: &str,
        key: &[u8],
        payload: &[u8],
        signer: Option<&[u8]>,
        signature: Option<&[u8]>,
    ) -> Result<(), String> {
        let signer = signer.ok_or("unsigned record (no guardian-signer header)")?;
        let signer = std::str::from_utf8(signer).map_err(|_| "the guardian-signer header is not UTF-8")?;
        if signer != hospital {
            return Err(format!("signed by {signer:?} but the record is hospital {hospital:?}'s"));
        }
        let verifying = self.keys.get(signer).ok_or_else(|| format!("{signer:?} is not a registered hospital"))?;
        let sig = signature.ok_or("no guardian-signature header")?;
        let sig = Signature::from_slice(sig).map_err(|_| "the guardian-signature header is not 64 bytes")?;
        let message = signed_message(role, signer, key, payload);
        verifying
            .verify(&message, &sig)
            .map_err(|_| format!("the signature does not verify under {signer}'s registered key"))
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    use super::*;

    fn record(key: &[u8], payload: &[u8], headers: &[(String, Vec<u8>)]) -> OwnedMessage {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header { key: k, value: Some(v) });
        }
        OwnedMessage::new(
            Some(payload.to_vec()),
            Some(key.to_vec()),
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(h),
        )
    }

    #[test]
    fn only_the_claimed_hospitals_key_over_the_same_bytes_verifies() {
        let (k1, k2) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let signers =
            Signers::new([("h001".to_string(), k1.verifying_key()), ("h002".to_string(), k2.verifying_key())].into());
        let good = record(b"h001", b"payload", &sign(&k1, "h001", "encounters", b"h001", b"payload"));
        assert_eq!(signers.verify(&good, "encounters", "h001"), Ok(()));
        // h002's key, claiming h001.
        let forged = record(b"h001", b"payload", &sign(&k2, "h001", "encounters", b"h001", b"payload"));
        assert!(signers.verify(&forged, "encounters", "h001").unwrap_err().contains("does not verify"));
        // h002 signing honestly, but the record says h001.
        let other = record(b"h001", b"payload", &sign(&k2, "h002", "encounters", b"h001", b"payload"));
        assert!(signers.verify(&other, "encounters", "h001").unwrap_err().contains("signed by \"h002\""));
        // Altered payload, key or role.
        let headers = sign(&k1, "h001", "encounters", b"h001", b"payload");
        assert!(signers.verify(&record(b"h001", b"payloaD", &headers), "encounters", "h001").is_err());
        assert!(signers.verify(&record(b"h00", b"payload", &headers), "encounters", "h001").is_err());
        assert!(signers.verify(&good, "budget-spend", "h001").is_err());
        // Unsigned, unknown hospital.
        assert!(
            signers.verify(&record(b"h001", b"payload", &[]), "encounters", "h001").unwrap_err().contains("unsigned")
        );
        let k3 = SigningKey::from_bytes(&[3; 32]);
        let stranger = record(b"h003", b"p", &sign(&k3, "h003", "encounters", b"h003", b"p"));
        assert!(signers.verify(&stranger, "encounters", "h003").unwrap_err().contains("not a registered"));
    }
}
