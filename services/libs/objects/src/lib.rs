//! Objects in S3 (or any S3-compatible store): content-addressed puts (the key ends in the
//! SHA-256 of the bytes, so a re-run writes the same key), reads that check the checksum,
//! listing. Model weights and topic archives go through here.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use sha2::{Digest, Sha256};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ObjectError {
    #[error("S3 {operation} of {key}: {message}")]
    S3 { operation: &'static str, key: String, message: String },
    #[error("object {key} has SHA-256 {actual}, the record says {expected}: refusing corrupted or substituted data")]
    Checksum { key: String, expected: String, actual: String },
    #[error("'{0}' is not an s3://bucket/key URI")]
    BadUri(String),
    #[error(
        "S3 credentials are missing: set --s3-access-key and --s3-secret-key (or GUARDIAN_S3_ACCESS_KEY / GUARDIAN_S3_SECRET_KEY)"
    )]
    NoCredentials,
    #[error("object {uri} is in bucket {bucket}, this store is bucket {ours}")]
    OtherBucket { uri: String, bucket: String, ours: String },
}

fn s3_error(operation: &'static str, key: &str, e: impl std::error::Error) -> ObjectError {
    // The SDK's Display is terse ("service error"); the source chain says what happened.
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ObjectError::S3 { operation, key: key.to_string(), message }
}

/// Where the store is and how to sign requests.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Endpoint URL for S3-compatible servers (None: AWS's regional endpoint).
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
}

/// Where model weights (and archives) live: the flags every command that touches S3
/// shares, also a section of service config files.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Args {
    /// S3-compatible endpoint (unset: AWS S3 of --s3-region)
    #[arg(long, env = "GUARDIAN_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "GUARDIAN_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// S3 access key id (static credentials)
    #[arg(long, env = "GUARDIAN_S3_ACCESS_KEY", hide_env_values = true)]
    pub s3_access_key: Option<String>,
    /// S3 secret access key
    #[arg(long, env = "GUARDIAN_S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,
    /// Bucket of the model versions
    #[arg(long, env = "GUARDIAN_MODEL_BUCKET", default_value = "guardian-models")]
    pub model_bucket: String,
}

impl Default for S3Args {
    fn default() -> Self {
        S3Args {
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key: None,
            s3_secret_key: None,
            model_bucket: "guardian-models".into(),
        }
    }
}

impl S3Args {
    /// The store of the model versions.
    pub fn models(&self) -> Result<ObjectStore, ObjectError> {
        self.store(&self.model_bucket)
    }

    /// A store on `bucket` with these credentials.
    pub fn store(&self, bucket: &str) -> Result<ObjectStore, ObjectError> {
        let (Some(access_key), Some(secret_key)) = (&self.s3_access_key, &self.s3_secret_key) else {
            return Err(ObjectError::NoCredentials);
        };
        Ok(ObjectStore::new(&S3Settings {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key: access_key.clone(),
            secret_key: secret_key.clone(),
            bucket: bucket.to_string(),
        }))
    }
}

/// A stored object: its URI, key and hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub uri: String,
    pub key: String,
    pub sha256: String,
    pub bytes: u64,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone)]
pub struct ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl ObjectStore {
    pub fn new(settings: &S3Settings) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(Credentials::new(
                settings.access_key.clone(),
                settings.secret_key.clone(),
                None,
                None,
                "guardian",
            ))
            .http_client(http);
        if let Some(endpoint) = &settings.endpoint {
            // S3-compatible servers on one host name: path-style addressing.
            config = config.endpoint_url(endpoint).force_path_style(true);
        }
        ObjectStore { client: aws_sdk_s3::Client::from_conf(config.build()), bucket: settings.bucket.clone() }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// The key of an `s3://bucket/key` URI in this store's bucket.
    pub fn key_of<'a>(&self, uri: &'a str) -> Result<&'a str, ObjectError> {
        let rest = uri.strip_prefix("s3://").ok_or_else(|| ObjectError::BadUri(uri.to_string()))?;
        let (bucket, key) = rest.split_once('/').ok_or_else(|| ObjectError::BadUri(uri.to_string()))?;
        if bucket != self.bucket {
            return Err(ObjectError::OtherBucket { uri: uri.into(), bucket: bucket.into(), ours: self.bucket.clone() });
        }
        Ok(key)
    }

    /// Creates the bucket if it does not exist (local stacks; production buckets come
    /// from Terraform).
    pub async fn ensure_bucket(&self) -> Result<(), ObjectError> {
        if self.client.head_bucket().bucket(&self.bucket).send().await.is_ok() {
            return Ok(());
        }
        match self.client.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let service = e.as_service_error();
                if service.is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()) {
                    Ok(())
                } else {
                    Err(s3_error("create-bucket", &self.bucket, e))
                }
            }
        }
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<StoredObject, ObjectError> {
        let sha256 = sha256_hex(&bytes);
        let len = bytes.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .metadata("sha256", &sha256)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_error("put", key, e))?;
        Ok(StoredObject { uri: self.uri(key), key: key.to_string(), sha256, bytes: len })
    }

    /// Stores `bytes` under `{prefix}/{sha256}.{extension}`; an object already there (the
    /// same content) is not written again.
    pub async fn put_content_addressed(
        &self,
        prefix: &str,
        extension: &str,
        bytes: Vec<u8>,
    ) -> Result<StoredObject, ObjectError> {
        let sha256 = sha256_hex(&bytes);
        let key = format!("{}/{sha256}.{extension}", prefix.trim_end_matches('/'));
        if self.client.head_object().bucket(&self.bucket).key(&key).send().await.is_ok() {
            return Ok(StoredObject { uri: self.uri(&key), key, sha256, bytes: bytes.len() as u64 });
        }
        self.put(&key, bytes).await
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, ObjectError> {
        let out =
            self.client.get_object().bucket(&self.bucket).key(key).send().await.map_err(|e| s3_error("get", key, e))?;
        let body = out.body.collect().await.map_err(|e| s3_error("get", key, e))?;
        Ok(body.into_bytes().to_vec())
    }

    /// Reads an object and checks it against the SHA-256 its record carries.
    pub async fn get_verified(&self, uri: &str, sha256: &str) -> Result<Vec<u8>, ObjectError> {
        let key = self.key_of(uri)?;
        let bytes = self.get(key).await?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(ObjectError::Checksum { key: key.to_string(), expected: sha256.to_string(), actual });
        }
        Ok(bytes)
    }

    /// The bucket's object lock: `Some("COMPLIANCE, 2555 days")` (its default retention,
    /// or `"no default retention"`), `None` when the bucket has no object lock.
    pub async fn object_lock(&self) -> Result<Option<String>, ObjectError> {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        match self.client.get_object_lock_configuration().bucket(&self.bucket).send().await {
            Ok(out) => {
                let Some(config) = out.object_lock_configuration() else { return Ok(None) };
                if config.object_lock_enabled().is_none_or(|e| e.as_str() != "Enabled") {
                    return Ok(None);
                }
                let retention = config.rule().and_then(|r| r.default_retention());
                Ok(Some(match retention {
                    None => "no default retention".to_string(),
                    Some(r) => {
                        let mode = r.mode().map_or("no mode", |m| m.as_str());
                        match (r.days(), r.years()) {
                            (Some(d), _) => format!("{mode}, {d} days"),
                            (_, Some(y)) => format!("{mode}, {y} years"),
                            _ => mode.to_string(),
                        }
                    }
                }))
            }
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => Ok(None),
            Err(e) => Err(s3_error("get-object-lock-configuration", &self.bucket, e)),
        }
    }

    /// Keys under `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| s3_error("list", prefix, e))?;
            keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_string)));
            match out.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        Ok(keys)
    }
}
