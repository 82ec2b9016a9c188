//! Typed configuration files: every service's config can be written as TOML (the chaos
//! runner and deployments do) as well as given as flags. Unknown keys are refused by the
//! config types themselves (`#[serde(deny_unknown_fields)]`); this module reads, parses
//! and names the file in its errors.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reads and parses a TOML config file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, crate::Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::Error::Config { path: path.display().to_string(), error: e.to_string() })?;
    toml::from_str(&text).map_err(|e| crate::Error::Config { path: path.display().to_string(), error: e.to_string() })
}

/// The settings of a command: read from `file` when one is given (the flags are then
/// ignored), else `flags` as they are.
pub fn file_or<T: DeserializeOwned>(file: Option<&Path>, flags: T) -> Result<T, crate::Error> {
    match file {
        Some(path) => load(path),
        None => Ok(flags),
    }
}

/// A config as TOML text.
pub fn to_text<T: Serialize>(config: &T) -> Result<String, crate::Error> {
    toml::to_string(config).map_err(|e| crate::Error::Config { path: "(serializing)".into(), error: e.to_string() })
}

/// Writes a config as TOML (0600: configs can carry secrets).
pub fn write<T: Serialize>(path: &Path, config: &T) -> Result<(), crate::Error> {
    write_text(path, &to_text(config)?)
}

/// Writes config text (0600: configs can carry secrets).
pub fn write_text(path: &Path, text: &str) -> Result<(), crate::Error> {
    let err = |error: String| crate::Error::Config { path: path.display().to_string(), error };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| err(e.to_string()))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| err(e.to_string()))
}

/// The settings a command line with no flags and no environment gives: what a config
/// type's `Default` (the defaults of its files) must equal, so a file and the flags mean
/// the same when they leave a setting out.
pub fn flag_defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults")).mut_args(|a| a.env(None::<&'static str>));
    let matches = cmd.try_get_matches_from(["defaults"]).expect("no flag is required");
    T::from_arg_matches(&matches).expect("the defaults parse")
}
