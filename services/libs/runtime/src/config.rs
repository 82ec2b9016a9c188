//! Typed configuration files: every service's config can be written as TOML (the chaos
//! runner and deployments do) as well as given as flags. Unknown keys are refused by the
//! config types themselves (`#[serde(deny_unknown_fields)]`); this module reads, parses
//! and names the file in its errors.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reads and parses a TOML config file. A problem is one line naming the file and, for
/// a parse error, the line of the file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, crate::Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::Error::Config { path: path.display().to_string(), error: e.to_string() })?;
    toml::from_str(&text)
        .map_err(|e| crate::Error::Config { path: path.display().to_string(), error: one_line(&e, &text) })
}

/// A TOML error as one line: `line N: message`.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => format!("line {}: {message}", text[..span.start.min(text.len())].matches('\n').count() + 1),
        None => message,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        name: String,
        #[serde(default)]
        count: u32,
    }

    #[test]
    fn a_file_round_trips_and_a_bad_one_is_one_line_naming_it() {
        let dir = std::env::temp_dir().join(format!("config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        write_text(&good, &to_text(&Settings { name: "a".into(), count: 3 }).unwrap()).unwrap();
        assert_eq!(load::<Settings>(&good).unwrap(), Settings { name: "a".into(), count: 3 });
        assert_eq!(file_or(None, Settings { name: "b".into(), count: 0 }).unwrap().name, "b");
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "name = \"a\"\n\ncont = 3\n").unwrap();
        let e = load::<Settings>(&bad).unwrap_err().to_string();
        assert!(!e.contains('\n') && e.contains("bad.toml") && e.contains("line 3") && e.contains("cont"), "{e}");
        let e = load::<Settings>(&dir.join("missing.toml")).unwrap_err().to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }
}
