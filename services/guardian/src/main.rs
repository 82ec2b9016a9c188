//! `guardian`: every Phoenix Guardian service and ops tool as a subcommand.
//! Thin on purpose: parse, start telemetry, run, turn an error into one line.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod common;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let _telemetry = guardian_runtime::telemetry::init("guardian", cli.log_format.into());
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
