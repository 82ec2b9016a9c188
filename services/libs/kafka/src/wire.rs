//! Kafka's ACLs read over the wire protocol: librdkafka's admin API has no
//! `DescribeAcls`, so this speaks the three requests it needs itself, over the client's
//! own security settings: SASL (`SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN`, RFC 5802
//! with the server's signature checked), TLS (rustls, the `ssl.ca.location` CA or the
//! system's roots), then `DescribeAcls` v1 for every ACL on the cluster.
//!
//! Versions: `SaslHandshake` v1, `SaslAuthenticate` v1, `DescribeAcls` v1 (all
//! non-flexible, served by every broker since Kafka 2.0 and still by 4.x).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use guardian_topics::access::{Acl, AclOperation, Operation, Resource};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::KafkaSettings;

const SASL_HANDSHAKE: i16 = 17;
const DESCRIBE_ACLS: i16 = 29;
const SASL_AUTHENTICATE: i16 = 36;
/// Largest response accepted (the broker is trusted, a wrong port is not).
const MAX_FRAME: usize = 64 << 20;

/// Why the ACLs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AclsError {
    #[error("the cluster has no authorizer: every authenticated principal may do everything")]
    NoAuthorizer,
    #[error("not allowed to describe ACLs (the principal needs DESCRIBE on the cluster): {0}")]
    NotAllowed(String),
    #[error("{0}")]
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> AclsError {
    AclsError::Failed(e.to_string())
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Connection {
    stream: Box<dyn Stream>,
    client_id: String,
    correlation: i32,
}

/// Builds request bodies in Kafka's big-endian, length-prefixed encoding.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn i8(&mut self, v: i8) -> &mut Self {
        self.0.push(v as u8);
        self
    }
    fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn string(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            None => self.i16(-1),
            Some(s) => {
                self.i16(s.len() as i16);
                self.0.extend_from_slice(s.as_bytes());
                self
            }
        }
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.i32(v.len() as i32);
        self.0.extend_from_slice(v);
        self
    }
}

/// Reads a response body, every length checked against what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AclsError> {
        if self.0.len() < n {
            return Err(failed("truncated response from the broker"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i8(&mut self) -> Result<i8, AclsError> {
        Ok(self.take(1)?[0] as i8)
    }
    fn i16(&mut self) -> Result<i16, AclsError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn i32(&mut self) -> Result<i32, AclsError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn string(&mut self) -> Result<Option<String>, AclsError> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        let raw = self.take(n as usize)?;
        String::from_utf8(raw.to_vec()).map(Some).map_err(|_| failed("a string that is not UTF-8"))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, AclsError> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(Vec::new());
        }
        Ok(self.take(n as usize)?.to_vec())
    }
    fn count(&mut self) -> Result<usize, AclsError> {
        let n = self.i32()?;
        // Each element takes at least one byte: a count beyond what is left is a lie.
        if n < 0 || n as usize > self.0.len() {
            return Err(failed(format!("an array of {n} elements in {} bytes", self.0.len())));
        }
        Ok(n as usize)
    }
}

impl Connection {
    async fn request(&mut self, api_key: i16, version: i16, body: &[u8]) -> Result<Vec<u8>, AclsError> {
        self.correlation += 1;
        let mut frame = Writer::default();
        frame.i32(0).i16(api_key).i16(version).i32(self.correlation).string(Some(&self.client_id));
        frame.0.extend_from_slice(body);
        let size = (frame.0.len() - 4) as i32;
        frame.0[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&frame.0).await.map_err(failed)?;
        self.stream.flush().await.map_err(failed)?;
        let size = self.stream.read_i32().await.map_err(failed)?;
        if size < 4 || size as usize > MAX_FRAME {
            return Err(failed(format!("a response of {size} bytes: is this a Kafka listener for this protocol?")));
        }
        let mut response = vec![0; size as usize];
        self.stream.read_exact(&mut response).await.map_err(failed)?;
        let correlation = i32::from_be_bytes(response[..4].try_into().expect("4 bytes"));
        if correlation != self.correlation {
            return Err(failed(format!("response {correlation} to request {}", self.correlation)));
        }
        response.drain(..4);
        Ok(response)
    }

    async fn sasl(&mut self, mechanism: &str, user: &str, password: &str) -> Result<(), AclsError> {
        let body = self.request(SASL_HANDSHAKE, 1, &Writer::default().string(Some(mechanism)).0).await?;
        let mut r = Reader(&body);
        let code = r.i16()?;
        if code != 0 {
            let mut offered = Vec::new();
            for _ in 0..r.count()? {
                offered.extend(r.string()?);
            }
            return Err(failed(format!(
                "the broker refuses SASL {mechanism} (error {code}; offers {})",
                offered.join(", ")
            )));
        }
        match mechanism {
            "PLAIN" => {
                self.authenticate(format!("\0{user}\0{password}").as_bytes()).await?;
                Ok(())
            }
            "SCRAM-SHA-512" => self.scram(Hash::Sha512, user, password).await,
            "SCRAM-SHA-256" => self.scram(Hash::Sha256, user, password).await,
            other => Err(failed(format!(
                "SASL mechanism {other} is not supported here (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN)"
            ))),
        }
    }

    async fn authenticate(&mut self, token: &[u8]) -> Result<Vec<u8>, AclsError> {
        let body = self.request(SASL_AUTHENTICATE, 1, &Writer::default().bytes(token).0).await?;
        let mut r = Reader(&body);
        let code = r.i16()?;
        let message = r.string()?;
        if code != 0 {
            return Err(failed(format!("authentication failed (error {code}): {}", message.unwrap_or_default())));
        }
        r.bytes()
    }

    async fn scram(&mut self, hash: Hash, user: &str, password: &str) -> Result<(), AclsError> {
        let nonce = B64.encode(rand::random::<[u8; 24]>());
        let mut exchange = Scram::new(hash, user, &nonce);
        let server_first = self.authenticate(exchange.client_first().as_bytes()).await?;
        let client_final = exchange.client_final(&String::from_utf8_lossy(&server_first), password)?;
        let server_final = self.authenticate(client_final.as_bytes()).await?;
        exchange.verify(&String::from_utf8_lossy(&server_final))
    }
}

#[derive(Debug, Clone, Copy)]
enum Hash {
    Sha256,
    Sha512,
}

/// One SCRAM exchange from the client's side (RFC 5802, no channel binding).
struct Scram {
    hash: Hash,
    client_first_bare: String,
    nonce: String,
    server_signature: Vec<u8>,
}

impl Scram {
    fn new(hash: Hash, user: &str, nonce: &str) -> Self {
        let name = user.replace('=', "=3D").replace(',', "=2C");
        Scram {
            hash,
            client_first_bare: format!("n={name},r={nonce}"),
            nonce: nonce.to_string(),
            server_signature: Vec::new(),
        }
    }

    fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    fn hmac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn with<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes any key");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        match self.hash {
            Hash::Sha256 => with::<Hmac<Sha256>>(key, data),
            Hash::Sha512 => with::<Hmac<Sha512>>(key, data),
        }
    }

    fn digest(&self, data: &[u8]) -> Vec<u8> {
        match self.hash {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn client_final(&mut self, server_first: &str, password: &str) -> Result<String, AclsError> {
        let field = |k: &str| {
            server_first
                .split(',')
                .find_map(|f| f.strip_prefix(k))
                .ok_or_else(|| failed(format!("SCRAM: no {k} in the server's first message")))
        };
        let nonce = field("r=")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(failed("SCRAM: the server's nonce does not extend ours"));
        }
        let salt = B64.decode(field("s=")?).map_err(|_| failed("SCRAM: the salt is not base64"))?;
        let iterations: u32 = field("i=")?.parse().map_err(|_| failed("SCRAM: the iteration count is not a number"))?;
        // Kafka's floor is 4096; the ceiling keeps a wrong server from holding the CPU.
        if !(4096..=1_000_000).contains(&iterations) {
            return Err(failed(format!("SCRAM: {iterations} iterations (4096 to 1000000 accepted)")));
        }
        // Hi(): PBKDF2 with HMAC, one block.
        let mut u = self.hmac(password.as_bytes(), &[salt.as_slice(), &1u32.to_be_bytes()].concat());
        let mut salted = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password.as_bytes(), &u);
            salted.iter_mut().zip(&u).for_each(|(s, x)| *s ^= x);
        }
        let client_key = self.hmac(&salted, b"Client Key");
        let stored_key = self.digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = self.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let server_key = self.hmac(&salted, b"Server Key");
        self.server_signature = self.hmac(&server_key, auth_message.as_bytes());
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    fn verify(&self, server_final: &str) -> Result<(), AclsError> {
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(failed(format!("SCRAM: the server refused: {e}")));
        }
        match server_final.strip_prefix("v=").map(|v| B64.decode(v)) {
            Some(Ok(v)) if v == self.server_signature => Ok(()),
            _ => {
                Err(failed("SCRAM: the server's signature does not match (not the broker that holds our credentials)"))
            }
        }
    }
}

fn tls_config(ca: Option<&str>) -> Result<Arc<tokio_rustls::rustls::ClientConfig>, AclsError> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in
                rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| failed(format!("{path}: {e}")))?
            {
                roots
                    .add(cert.map_err(|e| failed(format!("{path}: {e}")))?)
                    .map_err(|e| failed(format!("{path}: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(failed)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn connect(settings: &KafkaSettings) -> Result<Connection, AclsError> {
    let get = |k: &str| settings.overrides.get(k).map(String::as_str);
    let protocol = get("security.protocol").unwrap_or("plaintext").to_ascii_lowercase();
    // The first bootstrap server that answers (any broker serves DescribeAcls).
    let mut tried = Vec::new();
    let mut reached = None;
    for address in settings.bootstrap_servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let address = address.split_once("://").map_or(address, |(_, a)| a);
        match TcpStream::connect(address).await {
            Ok(tcp) => {
                reached = Some((address, tcp));
                break;
            }
            Err(e) => tried.push(format!("{address}: {e}")),
        }
    }
    let Some((address, tcp)) = reached else {
        return Err(failed(if tried.is_empty() { "no bootstrap server".to_string() } else { tried.join("; ") }));
    };
    let stream: Box<dyn Stream> = if protocol.ends_with("ssl") {
        let host = address.rsplit_once(':').map_or(address, |(h, _)| h).trim_matches(['[', ']']);
        let name = rustls_pki_types::ServerName::try_from(host.to_string()).map_err(failed)?;
        let tls = tokio_rustls::TlsConnector::from(tls_config(get("ssl.ca.location"))?);
        Box::new(tls.connect(name, tcp).await.map_err(|e| failed(format!("TLS to {address}: {e}")))?)
    } else {
        Box::new(tcp)
    };
    let mut c = Connection { stream, client_id: settings.client_id.clone(), correlation: 0 };
    if protocol.starts_with("sasl") {
        let mechanism = get("sasl.mechanism").unwrap_or("SCRAM-SHA-512").to_ascii_uppercase();
        let user = get("sasl.username").ok_or_else(|| failed("SASL without a user name (--kafka-username)"))?;
        let password = get("sasl.password").ok_or_else(|| failed("SASL without a password (--kafka-password)"))?;
        c.sasl(&mechanism, user, password).await?;
    }
    Ok(c)
}

fn operation(code: i8) -> AclOperation {
    match code {
        2 => AclOperation::All,
        3 => AclOperation::Op(Operation::Read),
        4 => AclOperation::Op(Operation::Write),
        5 => AclOperation::Other("CREATE"),
        6 => AclOperation::Other("DELETE"),
        7 => AclOperation::Other("ALTER"),
        8 => AclOperation::Describe,
        9 => AclOperation::Other("CLUSTER_ACTION"),
        10 => AclOperation::Op(Operation::DescribeConfigs),
        11 => AclOperation::AlterConfigs,
        12 => AclOperation::Other("IDEMPOTENT_WRITE"),
        13 => AclOperation::Other("CREATE_TOKENS"),
        14 => AclOperation::Other("DESCRIBE_TOKENS"),
        _ => AclOperation::Other("UNKNOWN"),
    }
}

fn parse_acls(body: &[u8]) -> Result<Vec<Acl>, AclsError> {
    let mut r = Reader(body);
    let _throttle = r.i32()?;
    let code = r.i16()?;
    let message = r.string()?.unwrap_or_default();
    match code {
        0 => {}
        // SECURITY_DISABLED
        54 => return Err(AclsError::NoAuthorizer),
        // CLUSTER_AUTHORIZATION_FAILED
        31 => return Err(AclsError::NotAllowed(message)),
        c => return Err(failed(format!("DescribeAcls: error {c}: {message}"))),
    }
    let mut acls = Vec::new();
    for _ in 0..r.count()? {
        let resource = match r.i8()? {
            2 => Some(Resource::Topic),
            3 => Some(Resource::Group),
            5 => Some(Resource::TransactionalId),
            _ => None,
        };
        let name = r.string()?.unwrap_or_default();
        let prefixed = r.i8()? == 4;
        for _ in 0..r.count()? {
            let principal = r.string()?.unwrap_or_default();
            let host = r.string()?.unwrap_or_default();
            let operation = operation(r.i8()?);
            let allow = r.i8()? == 3;
            acls.push(Acl { principal, host, resource, name: name.clone(), prefixed, operation, allow });
        }
    }
    Ok(acls)
}

/// Every ACL on the cluster, read as `settings`' principal (which needs DESCRIBE on the
/// cluster). Gives up after 15 s.
pub async fn describe_acls(settings: &KafkaSettings) -> Result<Vec<Acl>, AclsError> {
    let work = async {
        let mut c = connect(settings).await?;
        // Every resource type, name, pattern, principal, host, operation and permission.
        let mut filter = Writer::default();
        filter.i8(1).string(None).i8(1).string(None).string(None).i8(1).i8(1);
        parse_acls(&c.request(DESCRIBE_ACLS, 1, &filter.0).await?)
    };
    tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .map_err(|_| failed(format!("no answer from {} in 15 s", settings.bootstrap_servers)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example (SHA-512 is the same construction; the
    /// integration test logs in to a real broker with it).
    #[test]
    fn scram_matches_the_rfc_examples() {
        let mut s = Scram::new(Hash::Sha256, "user", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(s.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            s.client_final(server_first, "pencil").unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.verify("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
        assert!(s.verify("v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_err());
        assert!(s.verify("e=invalid-proof").unwrap_err().to_string().contains("invalid-proof"));
    }

    #[test]
    fn scram_refuses_a_server_that_does_not_extend_the_nonce_or_asks_too_much() {
        let mut s = Scram::new(Hash::Sha512, "a,b=c", "abc");
        assert_eq!(s.client_first(), "n,,n=a=2Cb=3Dc,r=abc");
        assert!(s.client_final("r=xyz123,s=AAAA,i=4096", "pw").is_err());
        assert!(s.client_final("r=abc,s=AAAA,i=4096", "pw").is_err());
        assert!(s.client_final("r=abcdef,s=AAAA,i=100000000", "pw").is_err());
        assert!(s.client_final("r=abcdef,s=AAAA,i=1024", "pw").is_err());
    }

    /// (principal, operation, permission) codes.
    type Entry<'a> = (&'a str, i8, i8);

    /// A response with (resource type, name, pattern type, entries) resources.
    fn acl_response(code: i16, resources: &[(i8, &str, i8, &[Entry<'_>])]) -> Vec<u8> {
        let mut w = Writer::default();
        w.i32(0).i16(code).string(None).i32(resources.len() as i32);
        for (kind, name, pattern, acls) in resources {
            w.i8(*kind).string(Some(name)).i8(*pattern).i32(acls.len() as i32);
            for (principal, op, permission) in *acls {
                w.string(Some(principal)).string(Some("*")).i8(*op).i8(*permission);
            }
        }
        w.0
    }

    #[test]
    fn describe_acls_responses_parse_and_errors_are_named() {
        let body = acl_response(
            0,
            &[
                (2, "p.encounters", 3, &[("User:svc-kpi", 3, 3), ("User:*", 4, 2)]),
                (3, "svc-kpi", 4, &[("User:svc-kpi", 3, 3)]),
            ],
        );
        let acls = parse_acls(&body).unwrap();
        assert_eq!(acls.len(), 3);
        assert_eq!(acls[0].to_string(), "User:svc-kpi allows Read on topic p.encounters");
        assert!(!acls[1].allow && acls[1].operation == AclOperation::Op(Operation::Write));
        assert!(acls[2].prefixed && acls[2].resource == Some(Resource::Group));
        assert!(matches!(parse_acls(&acl_response(54, &[])), Err(AclsError::NoAuthorizer)));
        assert!(matches!(parse_acls(&acl_response(31, &[])), Err(AclsError::NotAllowed(_))));
        // Truncated, or an element count larger than the bytes left: refused, no allocation.
        assert!(parse_acls(&body[..body.len() - 1]).is_err());
        let mut lying = acl_response(0, &[]);
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(parse_acls(&lying).is_err());
    }
}
