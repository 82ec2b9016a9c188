//! `guardian`: every Phoenix Guardian service and ops tool as a subcommand.
//! Thin on purpose: parse, start telemetry, run, turn an error into one line.

use std::process::ExitCode;

mod cli;
mod commands;
mod common;

/// Secrets mounted as files: for each `GUARDIAN_<NAME>_FILE` in the environment whose
/// `GUARDIAN_<NAME>` is unset, the file's contents (one trailing newline removed) stand in
/// for that variable. Kubernetes mounts the secrets; they never appear in a pod's env.
fn secret_files() -> Result<Vec<(String, String)>, String> {
    let mut found = Vec::new();
    for (key, path) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let Some(name) = key.strip_prefix("GUARDIAN_").and_then(|k| k.strip_suffix("_FILE")) else { continue };
        let var = format!("GUARDIAN_{name}");
        if name.is_empty() || std::env::var_os(&var).is_some() {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{key}: cannot read {}: {e}", std::path::Path::new(&path).display()))?;
        let value = text.strip_suffix('\n').unwrap_or(&text);
        found.push((var, value.strip_suffix('\r').unwrap_or(value).to_string()));
    }
    Ok(found)
}

/// Gives every argument read from one of `secrets`' variables that value as a hidden
/// default, in every subcommand.
fn with_secret_defaults(cmd: clap::Command, secrets: &[(String, String)]) -> clap::Command {
    cmd.mut_args(|arg| {
        let env = arg.get_env().and_then(|e| e.to_str()).map(str::to_string);
        match env.and_then(|e| secrets.iter().find(|(var, _)| *var == e)) {
            // Leaked once per process start: the value lives as long as the process.
            Some((_, value)) => {
                arg.default_value(&*Box::leak(value.clone().into_boxed_str())).hide_default_value(true).required(false)
            }
            None => arg,
        }
    })
    .mut_subcommands(|sub| with_secret_defaults(sub, secrets))
}

/// The process's name in traces: `guardian` and its subcommands (`guardian-kpi`,
/// `guardian-fl-start`), so each service's spans are told apart.
fn trace_name(matches: &clap::ArgMatches) -> String {
    let mut name = String::from("guardian");
    let mut m = matches;
    while let Some((sub, next)) = m.subcommand() {
        name.push('-');
        name.push_str(sub);
        m = next;
    }
    name
}

fn parse_cli() -> Result<(cli::Cli, String), String> {
    use clap::{CommandFactory, FromArgMatches};
    let secrets = secret_files()?;
    let matches = if secrets.is_empty() {
        cli::Cli::command().get_matches()
    } else {
        with_secret_defaults(cli::Cli::command(), &secrets).get_matches()
    };
    let cli = cli::Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    Ok((cli, trace_name(&matches)))
}

fn main() -> ExitCode {
    let (cli, name) = match parse_cli() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _telemetry = guardian_runtime::telemetry::init(&name, cli.log_format.into());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        // The reader of our output went away (`guardian tail ... | head`): not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
