//! `boshctl`: the bosh-rs command line.
//!
//! Errors become exit codes at one boundary ([`exit_code`]), as cargo's
//! `CliError` does, so scripts can rely on them.

use clap::{Parser, Subcommand};

mod interpolate;
mod release;

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
    /// Create a release directory skeleton.
    InitRelease(release::InitArgs),
    /// Create a job skeleton in a release directory.
    GenerateJob(release::GenerateArgs),
    /// Create a package skeleton in a release directory.
    GeneratePackage(release::GenerateArgs),
    /// Track a file as a release blob.
    AddBlob(release::AddBlobArgs),
    /// List the release's blobs.
    Blobs(release::DirArg),
    /// Fetch missing blobs from the release blobstore (local provider).
    SyncBlobs(release::DirArg),
    /// Store new blobs in the release blobstore (local provider).
    UploadBlobs(release::DirArg),
    /// Build a dev (or --final) release from a release directory.
    CreateRelease(release::CreateArgs),
    /// Make a release tarball a final release of the release directory.
    FinalizeRelease(release::FinalizeArgs),
    /// Verify a release tarball and list its jobs and packages.
    InspectLocalRelease(release::InspectArgs),
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
        Command::InitRelease(a) => release::init(a),
        Command::GenerateJob(a) => release::generate_job(a),
        Command::GeneratePackage(a) => release::generate_package(a),
        Command::AddBlob(a) => release::add(a),
        Command::Blobs(a) => release::blobs(a),
        Command::SyncBlobs(a) => release::sync(a),
        Command::UploadBlobs(a) => release::upload(a),
        Command::CreateRelease(a) => release::create(a),
        Command::FinalizeRelease(a) => release::finalize(a),
        Command::InspectLocalRelease(a) => release::inspect(a),
    };
    if let Err(err) = result {
        eprintln!("Error: {err:#}");
        let code =
            if interpolate::is_bad_input(&err) { exit_code::BAD_INPUT } else { exit_code::FAILURE };
        std::process::exit(code);
    }
}
