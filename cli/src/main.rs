//! `boshctl`: the bosh-rs command line.
//!
//! Errors become exit codes at one boundary ([`exit_code`]), as cargo's
//! `CliError` does, so scripts can rely on them.

use clap::{Parser, Subcommand};

mod interpolate;

/// The bosh-rs command line.
#[derive(Debug, Parser)]
#[command(name = "boshctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply ops files and variables to a YAML file, as `bosh interpolate` does.
    #[command(visible_alias = "int")]
    Interpolate(interpolate::Args),
}

/// Exit codes scripts can rely on.
mod exit_code {
    /// The command failed for a reason other than bad input.
    pub const FAILURE: i32 = 1;
    /// The input (a file, flag or document) is wrong; fix it and retry.
    pub const BAD_INPUT: i32 = 2;
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Interpolate(args) => interpolate::run(args),
    };
    if let Err(err) = result {
        eprintln!("Error: {err:#}");
        let code =
            if interpolate::is_bad_input(&err) { exit_code::BAD_INPUT } else { exit_code::FAILURE };
        std::process::exit(code);
    }
}
