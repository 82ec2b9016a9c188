//! The schema registry, seen from the services: a client of the Confluent REST API that
//! Confluent Schema Registry, Apicurio Registry (`/apis/ccompat/v7`) and Karapace all
//! serve, and the subjects as code: [`sync`] makes each topic's subject hold the value
//! schema of `schemas/` under the compatibility its topic file declares, refusing what
//! the registry finds incompatible; [`differences`] says where a registry differs.
//!
//! Subjects follow the TopicNameStrategy: `<topic>-value`. Record keys are plain UTF-8
//! strings, not Avro, so no topic has a `-key` subject.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry at {url}: {error}")]
    Unreachable { url: String, error: String },
    #[error(
        "schema registry: {subject}: the schema of {schema} is incompatible with the registered versions ({level}): {reason}"
    )]
    Incompatible { subject: String, schema: String, level: String, reason: String },
    #[error("schema registry: {what}: HTTP {status}: {message}")]
    Refused { what: String, status: u16, message: String },
    #[error("schema registry URL {0:?}: {1}")]
    BadUrl(String, String),
}

/// A registered schema: its global id and its version under the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub id: u32,
    pub version: u32,
}

/// A Confluent REST API client.
#[derive(Debug, Clone)]
pub struct Client {
    /// The URL without credentials (requests carry them as basic authentication).
    base: String,
    auth: Option<(String, String)>,
    http: reqwest::Client,
}

/// A subject name as a URL path segment.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    /// A client of the registry at `url` (`http[s]://[user:password@]host:port[/path]`).
    pub fn new(url: &str) -> Result<Client, RegistryError> {
        // Credentials never reach a message.
        let shown_url = match url.split_once('@') {
            Some((before, after)) => format!("{}://***@{after}", before.split("://").next().unwrap_or("")),
            None => url.to_string(),
        };
        let bad = |why: &str| RegistryError::BadUrl(shown_url.clone(), why.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected http:// or https://"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("expected http:// or https://"));
        }
        let (auth, rest) = match rest.split_once('@') {
            Some((userinfo, host)) if !userinfo.contains('/') => {
                let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((u.to_string(), p.to_string())), host)
            }
            _ => (None, rest),
        };
        let shown = format!("{scheme}://{}", rest.trim_end_matches('/'));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Client { base: shown, auth, http })
    }

    /// The registry's URL, without credentials.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// One request: the status and the JSON body (`Null` when there is none).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), RegistryError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).header("Accept", CONTENT_TYPE);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(body) = body {
            req = req.header("Content-Type", CONTENT_TYPE).body(body.to_string());
        }
        let unreachable =
            |e: reqwest::Error| RegistryError::Unreachable { url: self.base.clone(), error: e.to_string() };
        let res = req.send().await.map_err(unreachable)?;
        let status = res.status().as_u16();
        let text = res.text().await.map_err(unreachable)?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    fn refused(what: String, status: u16, body: &Value) -> RegistryError {
        let message = body.get("message").and_then(Value::as_str).map_or_else(|| body.to_string(), str::to_string);
        RegistryError::Refused { what, status, message }
    }

    /// Whether `schema` is registered under `subject`, and as what.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<Option<Registered>, RegistryError> {
        let path = format!("/subjects/{}", segment(subject));
        let (status, body) = self.call(reqwest::Method::POST, &path, Some(json!({ "schema": schema }))).await?;
        match status {
            200 => {
                Ok(Some(registered(&body).ok_or_else(|| Self::refused(format!("lookup in {subject}"), status, &body))?))
            }
            404 => Ok(None),
            _ => Err(Self::refused(format!("lookup in {subject}"), status, &body)),
        }
    }

    /// Registers `schema` under `subject` (a schema already there keeps its id).
    pub async fn register(&self, subject: &str, schema_name: &str, schema: &str) -> Result<Registered, RegistryError> {
        let path = format!("/subjects/{}/versions", segment(subject));
        let (status, body) = self.call(reqwest::Method::POST, &path, Some(json!({ "schema": schema }))).await?;
        match status {
            200 => {}
            409 => {
                let level = self.compatibility(subject).await.ok().flatten().unwrap_or_else(|| "?".into());
                let reason = body.get("message").and_then(Value::as_str).unwrap_or("incompatible").to_string();
                return Err(RegistryError::Incompatible {
                    subject: subject.into(),
                    schema: schema_name.into(),
                    level,
                    reason,
                });
            }
            _ => return Err(Self::refused(format!("register in {subject}"), status, &body)),
        }
        // Some registries answer the id only: the version comes from a lookup.
        match self.lookup(subject, schema).await? {
            Some(r) => Ok(r),
            None => Err(Self::refused(format!("register in {subject}"), status, &body)),
        }
    }

    /// The subject's own compatibility level (`None`: it follows the registry's default).
    pub async fn compatibility(&self, subject: &str) -> Result<Option<String>, RegistryError> {
        let path = format!("/config/{}", segment(subject));
        let (status, body) = self.call(reqwest::Method::GET, &path, None).await?;
        match status {
            200 => Ok(body
                .get("compatibilityLevel")
                .or_else(|| body.get("compatibility"))
                .and_then(Value::as_str)
                .map(str::to_string)),
            404 => Ok(None),
            _ => Err(Self::refused(format!("compatibility of {subject}"), status, &body)),
        }
    }

    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        let path = format!("/config/{}", segment(subject));
        let (status, body) = self.call(reqwest::Method::PUT, &path, Some(json!({ "compatibility": level }))).await?;
        if status == 200 {
            Ok(())
        } else {
            Err(Self::refused(format!("set compatibility of {subject}"), status, &body))
        }
    }

    /// Whether `schema` could be registered under `subject` (`None`: nothing registered yet).
    pub async fn is_compatible(&self, subject: &str, schema: &str) -> Result<Option<bool>, RegistryError> {
        let path = format!("/compatibility/subjects/{}/versions/latest", segment(subject));
        let (status, body) = self.call(reqwest::Method::POST, &path, Some(json!({ "schema": schema }))).await?;
        match status {
            200 => Ok(body.get("is_compatible").and_then(Value::as_bool)),
            404 => Ok(None),
            _ => Err(Self::refused(format!("compatibility check in {subject}"), status, &body)),
        }
    }

    /// The schema text registered under a global id.
    pub async fn schema_by_id(&self, id: u32) -> Result<Option<String>, RegistryError> {
        let (status, body) = self.call(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None).await?;
        match status {
            200 => Ok(body.get("schema").and_then(Value::as_str).map(str::to_string)),
            404 => Ok(None),
            _ => Err(Self::refused(format!("schema id {id}"), status, &body)),
        }
    }

    /// The subjects the registry holds.
    pub async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let (status, body) = self.call(reqwest::Method::GET, "/subjects", None).await?;
        if status != 200 {
            return Err(Self::refused("list subjects".into(), status, &body));
        }
        Ok(body
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default())
    }
}

fn registered(body: &Value) -> Option<Registered> {
    Some(Registered {
        id: u32::try_from(body.get("id")?.as_u64()?).ok()?,
        version: u32::try_from(body.get("version")?.as_u64()?).ok()?,
    })
}

/// What one topic's value subject must hold.
#[derive(Debug, Clone)]
pub struct Subject {
    /// `<topic>-value`.
    pub name: String,
    /// The value schema's full name.
    pub schema_name: String,
    /// Its text as in `schemas/`.
    pub schema: String,
    /// A compatibility level (`BACKWARD_TRANSITIVE`, ...: the topic file's).
    pub compatibility: String,
    /// The schema's fingerprint (its single-object identity).
    pub fingerprint: u64,
}

impl Subject {
    /// The TopicNameStrategy subject of a topic's values.
    pub fn for_topic(topic: &str, schema: &guardian_schemas::SchemaEntry, compatibility: &str) -> Subject {
        Subject {
            name: format!("{topic}-value"),
            schema_name: schema.name.clone(),
            schema: schema.text.clone(),
            compatibility: compatibility.to_string(),
            fingerprint: schema.fingerprint,
        }
    }
}

/// Every catalogue topic's value subject, its schema taken from `schemas`.
pub fn subjects(
    catalogue: &guardian_topics::Catalogue,
    schemas: &guardian_schemas::Registry,
) -> Result<Vec<Subject>, guardian_schemas::SchemaError> {
    catalogue
        .specs()
        .map(|spec| {
            let entry = schemas.get(&spec.value_schema)?;
            Ok(Subject::for_topic(&catalogue.name_of(spec), entry, &spec.compatibility))
        })
        .collect()
}

/// What [`sync`] did (or, in a dry run, would do) to one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub subject: String,
    pub schema_name: String,
    /// The level before, when it changed.
    pub compatibility_was: Option<Option<String>>,
    pub compatibility: String,
    /// `None` in a dry run when the schema is not registered yet.
    pub registered: Option<Registered>,
    /// Whether the schema was (or would be) registered now.
    pub new: bool,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subject {}: ", self.subject)?;
        match (self.new, self.registered) {
            (true, Some(r)) => write!(f, "registered {} as id {} (version {})", self.schema_name, r.id, r.version)?,
            (true, None) => write!(f, "would register {}", self.schema_name)?,
            (false, Some(r)) => {
                write!(f, "{} already registered (id {}, version {})", self.schema_name, r.id, r.version)?
            }
            (false, None) => write!(f, "{}", self.schema_name)?,
        }
        match &self.compatibility_was {
            Some(was) => {
                write!(f, "; compatibility {} → {}", was.as_deref().unwrap_or("registry default"), self.compatibility)
            }
            None => write!(f, "; compatibility {}", self.compatibility),
        }
    }
}

/// Makes each subject hold its schema under its compatibility level: the level first (a
/// topic file that loosens it lets the change through), then the schema, refused with the
/// registry's reason when incompatible. With `dry_run`, changes nothing and checks
/// compatibility instead. Stops at the first refusal.
pub async fn sync(client: &Client, subjects: &[Subject], dry_run: bool) -> Result<Vec<Outcome>, RegistryError> {
    let mut out = Vec::new();
    for s in subjects {
        let level = client.compatibility(&s.name).await?;
        let compatibility_was = (level.as_deref() != Some(s.compatibility.as_str())).then_some(level);
        let existing = client.lookup(&s.name, &s.schema).await?;
        let (registered, new) = match existing {
            Some(r) => {
                if compatibility_was.is_some() && !dry_run {
                    client.set_compatibility(&s.name, &s.compatibility).await?;
                }
                (Some(r), false)
            }
            None if dry_run => {
                if client.is_compatible(&s.name, &s.schema).await? == Some(false) {
                    return Err(RegistryError::Incompatible {
                        subject: s.name.clone(),
                        schema: s.schema_name.clone(),
                        level: s.compatibility.clone(),
                        reason: "the registry finds it incompatible with the latest version (dry run)".into(),
                    });
                }
                (None, true)
            }
            None => {
                if compatibility_was.is_some() {
                    client.set_compatibility(&s.name, &s.compatibility).await?;
                }
                (Some(client.register(&s.name, &s.schema_name, &s.schema).await?), true)
            }
        };
        out.push(Outcome {
            subject: s.name.clone(),
            schema_name: s.schema_name.clone(),
            compatibility_was,
            compatibility: s.compatibility.clone(),
            registered,
            new,
        });
    }
    Ok(out)
}

/// The registry ids of the subjects' schemas, for Confluent framing
/// ([`guardian_schemas::codec::use_schema_registry`]), and the subjects that do not hold
/// their current schema (`guardian topics apply` registers them: a producer never does).
pub async fn resolve(
    client: &Client,
    subjects: &[Subject],
) -> Result<(guardian_schemas::codec::SchemaIds, Vec<String>), RegistryError> {
    let mut ids = guardian_schemas::codec::SchemaIds::default();
    let mut missing = Vec::new();
    for s in subjects {
        match client.lookup(&s.name, &s.schema).await? {
            Some(r) => ids.insert(s.fingerprint, r.id),
            None => missing.push(s.name.clone()),
        }
    }
    Ok((ids, missing))
}

/// Where the registry differs from `subjects`: a schema not registered, a level not as
/// declared. Empty when in sync.
pub async fn differences(client: &Client, subjects: &[Subject]) -> Result<Vec<String>, RegistryError> {
    let mut out = Vec::new();
    for s in subjects {
        if client.lookup(&s.name, &s.schema).await?.is_none() {
            out.push(format!("subject {}: the current {} is not registered", s.name, s.schema_name));
        }
        let level = client.compatibility(&s.name).await?;
        if level.as_deref() != Some(s.compatibility.as_str()) {
            out.push(format!(
                "subject {}: compatibility {}, declared {}",
                s.name,
                level.as_deref().unwrap_or("the registry default"),
                s.compatibility
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_credentials_out_of_what_is_shown() {
        let c = Client::new("https://key:secret@registry.example:8081/apis/ccompat/v7/").unwrap();
        assert_eq!(c.url(), "https://registry.example:8081/apis/ccompat/v7");
        assert_eq!(c.auth, Some(("key".into(), "secret".into())));
        assert!(Client::new("registry:8081").is_err());
        assert!(Client::new("ftp://registry").is_err());
        let e = Client::new("ftp://key:secret@registry").unwrap_err().to_string();
        assert!(!e.contains("secret") && e.contains("***@registry"), "{e}");
        assert_eq!(segment("p.guardian.encounters-value"), "p.guardian.encounters-value");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn outcomes_say_what_changed() {
        let o = Outcome {
            subject: "t-value".into(),
            schema_name: "x.T".into(),
            compatibility_was: Some(None),
            compatibility: "BACKWARD_TRANSITIVE".into(),
            registered: Some(Registered { id: 7, version: 1 }),
            new: true,
        };
        assert_eq!(
            o.to_string(),
            "subject t-value: registered x.T as id 7 (version 1); compatibility registry default → BACKWARD_TRANSITIVE"
        );
    }
}
