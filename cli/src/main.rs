//! `boshctl`: the bosh-rs command line.
//!
//! Errors become exit codes at one boundary ([`exit_code`]), as cargo's
//! `CliError` does, so scripts can rely on them.

use bosh_api::objects::ConfigType;
use bosh_api::wire::InstanceAction;
use clap::{Parser, Subcommand};

mod cck;
mod configs;
mod deployments;
mod director;
mod env;
mod errands;
mod fetch;
mod instances;
mod interpolate;
mod manifest_releases;
mod objects;
mod release;
mod render;
mod ssh;
mod tasks;
mod uploads;
mod vms;

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
    /// Fetch missing blobs from the release blobstore (local or s3 provider).
    SyncBlobs(release::DirArg),
    /// Store new blobs in the release blobstore (local or s3 provider).
    UploadBlobs(release::DirArg),
    /// Build a dev (or --final) release from a release directory.
    CreateRelease(release::CreateArgs),
    /// Make a release tarball a final release of the release directory.
    FinalizeRelease(release::FinalizeArgs),
    /// Verify a release tarball and list its jobs and packages.
    InspectLocalRelease(release::InspectArgs),
    /// Render a job of a release directory as the director would, with no
    /// director: `render RELEASE_DIR JOB --properties FILE --out DIR`.
    Render(render::Args),
    /// Show objects of a kind (table, YAML or JSON).
    Get(objects::GetArgs),
    /// Stream changes to objects of a kind.
    Watch(objects::WatchArgs),
    /// Create or replace a typed config (`--type cloud|runtime|cpi|resurrection`).
    UpdateConfig(configs::UpdateArgs),
    /// Print a typed config.
    Config(configs::ShowArgs),
    /// List configs and whether boshd found them valid.
    Configs(uploads::ListArgs),
    /// Create or replace the cloud config.
    UpdateCloudConfig(configs::UpdateArgs),
    /// Print the cloud config.
    CloudConfig(configs::ShowArgs),
    /// Create or replace the runtime config.
    UpdateRuntimeConfig(configs::UpdateArgs),
    /// Print the runtime config.
    RuntimeConfig(configs::ShowArgs),
    /// Create or replace the CPI config (`cpis: [{name, type, properties,
    /// exec_path}]`): the CPIs a cloud config's `azs[].cpi` can name.
    UpdateCpiConfig(configs::UpdateArgs),
    /// Print the CPI config.
    CpiConfig(configs::ShowArgs),
    /// Turn resurrection on or off, everywhere or for a deployment or instance group.
    UpdateResurrection(configs::ResurrectionArgs),
    /// Upload a release tarball, directory or URL to the director.
    UploadRelease(uploads::UploadReleaseArgs),
    /// Upload a stemcell tarball to the director.
    UploadStemcell(uploads::UploadStemcellArgs),
    /// List the director's releases.
    Releases(uploads::ListArgs),
    /// List the director's stemcells.
    Stemcells(uploads::ListArgs),
    /// Show every job and package of an uploaded release.
    InspectRelease(uploads::NameVersionArgs),
    /// Delete a release (refused while a deployment uses it).
    DeleteRelease(uploads::NameVersionArgs),
    /// Delete a stemcell (refused while a deployment uses it).
    DeleteStemcell(uploads::NameVersionArgs),
    /// Build the local CPI's stemcell from the built agent binary.
    BuildLocalStemcell(uploads::BuildLocalStemcellArgs),
    /// Download a release compiled for a stemcell (`NAME/VERSION OS/VERSION`).
    ExportRelease(uploads::ExportArgs),
    /// List tasks.
    Tasks(tasks::TasksArgs),
    /// Show a task's events (`--follow` until it finishes).
    Task(tasks::TaskArgs),
    /// Cancel a task that changes a deployment: no further instance is
    /// updated for it (those under way finish).
    CancelTask(tasks::CancelTaskArgs),
    /// Show events, of all tasks or one.
    Events(tasks::EventsArgs),
    /// List the VMs the director made, with their agents' state.
    Vms(vms::VmsArgs),
    /// Run a command on a VM through its agent: `exec GROUP/ID -- CMD...`.
    Exec(vms::ExecArgs),
    /// Deploy a manifest (ops files and variables applied here) and follow its task.
    #[command(visible_alias = "deploy")]
    Apply(deployments::ApplyArgs),
    /// List deployments: releases, stemcells, instances ready/total, last task.
    Deployments(uploads::ListArgs),
    /// Print a deployment's manifest (with its `((placeholders))`).
    Manifest(deployments::ManifestArgs),
    /// Delete a deployment: its VMs, disks and variables (follows the task).
    DeleteDeployment(deployments::DeleteArgs),
    /// List a deployment's variables: names, types, ids (never values).
    Variables(deployments::VariablesArgs),
    /// List a deployment's links: each consumer and the provider it resolved to.
    Links(deployments::VariablesArgs),
    /// List a deployment's instances (`--ps`: their processes).
    Instances(instances::InstancesArgs),
    /// Start instances: `start -d NAME [GROUP[/INDEX|/ID]]`.
    Start(instances::ActionArgs),
    /// Stop instances' jobs (`--hard`: delete their VMs, keep disks).
    Stop(instances::StopArgs),
    /// Restart instances' jobs.
    Restart(instances::ActionArgs),
    /// Recreate instances' VMs.
    Recreate(instances::ActionArgs),
    /// Download an instance's logs: `logs -d NAME GROUP/INDEX`.
    Logs(instances::LogsArgs),
    /// Open a shell on an instance, or run a command there with `-c` (exits with its code).
    Ssh(ssh::SshArgs),
    /// Copy files to or from instances: `scp -d NAME [-r] SRC DST`, one side `GROUP/ID:PATH`.
    Scp(ssh::ScpArgs),
    /// Scan a deployment for problems and resolve them (`--report`, `--auto`, `--resolution`).
    #[command(visible_alias = "cck")]
    CloudCheck(cck::CckArgs),
    /// List a deployment's errands: errand groups and colocated jobs with `bin/run`.
    Errands(errands::ErrandsArgs),
    /// Run an errand and print each instance's output; exits with the errand's code.
    RunErrand(errands::RunErrandArgs),
    /// Start a local environment (etcd, boshd with the local CPI and NATS) in the data dir.
    Up(env::UpArgs),
    /// Stop what `up` started (idempotent).
    Down(env::DownArgs),
}

/// Exit codes scripts can rely on.
mod exit_code {
    /// The command failed for a reason other than bad input.
    pub const FAILURE: i32 = 1;
    /// The input (a file, flag or document) is wrong or too large; fix it and retry.
    pub const BAD_INPUT: i32 = 2;
    /// The object asked for does not exist.
    pub const NOT_FOUND: i32 = 3;
    /// Someone else changed the object first (or it exists already): re-read and retry.
    pub const CONFLICT: i32 = 4;
    /// The director refused the token.
    pub const UNAUTHORIZED: i32 = 5;
}

/// Runs a command that talks to the director.
fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
}

/// The exit code for an error, decided in one place.
fn exit_code_for(err: &anyhow::Error) -> i32 {
    if let Some(api) = err.downcast_ref::<director::ApiError>() {
        return match api.status {
            // 413: the input is larger than the director accepts.
            400 | 413 | 422 => exit_code::BAD_INPUT,
            404 => exit_code::NOT_FOUND,
            409 => exit_code::CONFLICT,
            401 | 403 => exit_code::UNAUTHORIZED,
            _ => exit_code::FAILURE,
        };
    }
    let release_input = err
        .chain()
        .any(|e| e.downcast_ref::<bosh_api::release::Error>().is_some_and(|r| r.is_bad_input()));
    if release_input || interpolate::is_bad_input(err) || render::is_bad_input(err) {
        exit_code::BAD_INPUT
    } else {
        exit_code::FAILURE
    }
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
        Command::Render(a) => render::run(a),
        Command::Get(a) => block_on(objects::get(a)),
        Command::Watch(a) => block_on(objects::watch(a)),
        Command::UpdateConfig(a) => block_on(configs::update(a, None)),
        Command::Config(a) => block_on(configs::show(a, None)),
        Command::Configs(a) => block_on(configs::list(a)),
        Command::UpdateCloudConfig(a) => block_on(configs::update(a, Some(ConfigType::Cloud))),
        Command::CloudConfig(a) => block_on(configs::show(a, Some(ConfigType::Cloud))),
        Command::UpdateRuntimeConfig(a) => block_on(configs::update(a, Some(ConfigType::Runtime))),
        Command::UpdateCpiConfig(a) => block_on(configs::update(a, Some(ConfigType::Cpi))),
        Command::CpiConfig(a) => block_on(configs::show(a, Some(ConfigType::Cpi))),
        Command::UpdateResurrection(a) => block_on(configs::update_resurrection(a)),
        Command::RuntimeConfig(a) => block_on(configs::show(a, Some(ConfigType::Runtime))),
        Command::UploadRelease(a) => block_on(uploads::upload_release(a)),
        Command::UploadStemcell(a) => block_on(uploads::upload_stemcell(a)),
        Command::Releases(a) => block_on(uploads::releases(a)),
        Command::Stemcells(a) => block_on(uploads::stemcells(a)),
        Command::InspectRelease(a) => block_on(uploads::inspect_release(a)),
        Command::DeleteRelease(a) => block_on(uploads::delete("releases", a)),
        Command::DeleteStemcell(a) => block_on(uploads::delete("stemcells", a)),
        Command::BuildLocalStemcell(a) => uploads::build_local_stemcell(a),
        Command::ExportRelease(a) => block_on(uploads::export_release(a)),
        Command::Tasks(a) => block_on(tasks::tasks(a)),
        Command::Task(a) => block_on(tasks::task(a)),
        Command::CancelTask(a) => block_on(tasks::cancel_task(a)),
        Command::Events(a) => block_on(tasks::events(a)),
        Command::Vms(a) => block_on(vms::vms(a)),
        Command::Exec(a) => block_on(vms::exec(a)),
        Command::Apply(a) => block_on(deployments::apply(a)),
        Command::Deployments(a) => block_on(deployments::list(a)),
        Command::Manifest(a) => block_on(deployments::manifest(a)),
        Command::DeleteDeployment(a) => block_on(deployments::delete(a)),
        Command::Variables(a) => block_on(deployments::variables(a)),
        Command::Links(a) => block_on(deployments::links(a)),
        Command::Instances(a) => block_on(instances::instances(a)),
        Command::Start(a) => block_on(instances::act(a, InstanceAction::Start)),
        Command::Stop(a) => {
            let action = if a.hard { InstanceAction::StopHard } else { InstanceAction::Stop };
            block_on(instances::act(a.action, action))
        }
        Command::Restart(a) => block_on(instances::act(a, InstanceAction::Restart)),
        Command::Recreate(a) => block_on(instances::act(a, InstanceAction::Recreate)),
        Command::CloudCheck(a) => block_on(cck::run(a)),
        Command::Errands(a) => block_on(errands::errands(a)),
        Command::RunErrand(a) => block_on(errands::run_errand(a)),
        Command::Ssh(a) => block_on(ssh::ssh(a)),
        Command::Scp(a) => block_on(ssh::scp(a)),
        Command::Logs(a) => block_on(instances::logs(a)),
        Command::Up(a) => block_on(env::up(a)),
        Command::Down(a) => block_on(env::down(a)),
    };
    if let Err(err) = result {
        eprintln!("Error: {err:#}");
        std::process::exit(exit_code_for(&err));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("boshctl").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    /// `deploy` takes bosh's flags: ops files, vars, vars files, var files, dry run and update options.
    #[test]
    fn deploy_parses_bosh_flags() {
        let Command::Apply(a) = parse(&[
            "deploy",
            "-d",
            "hello",
            "m.yml",
            "-o",
            "a.yml",
            "-o",
            "b.yml",
            "-v",
            "k=v",
            "-l",
            "vars.yml",
            "--var-file",
            "cert=c.pem",
            "--dry-run",
            "--recreate",
            "--skip-drain",
            "--fix",
            "--no-follow",
        ]) else {
            panic!("not apply")
        };
        assert_eq!(a.deployment.as_deref(), Some("hello"));
        assert_eq!(a.manifest, "m.yml");
        assert_eq!(a.sources.ops_files, ["a.yml", "b.yml"]);
        assert_eq!(a.sources.vars, ["k=v"]);
        assert_eq!(a.sources.vars_files, ["vars.yml"]);
        assert_eq!(a.sources.var_files, ["cert=c.pem"]);
        assert!(a.dry_run && a.recreate && a.skip_drain && a.fix && a.no_follow);
        assert!(matches!(parse(&["apply", "m.yml"]), Command::Apply(_)));
    }

    /// Instance verbs take `-d` and an optional `GROUP[/INDEX|/ID]`; `stop --hard` is its own action.
    #[test]
    fn instance_verbs_parse_targets() {
        let Command::Stop(s) = parse(&["stop", "-d", "hello", "web/0", "--hard"]) else {
            panic!("not stop")
        };
        assert!(s.hard);
        assert_eq!(s.action.deployment.deployment, "hello");
        assert_eq!(s.action.target.as_deref(), Some("web/0"));
        let Command::Restart(r) = parse(&["restart", "-d", "hello"]) else { panic!("not restart") };
        assert_eq!(r.target, None);
        assert!(matches!(parse(&["recreate", "-d", "h", "web"]), Command::Recreate(_)));
        assert!(matches!(parse(&["start", "-d", "h", "web/abc"]), Command::Start(_)));
        let Command::Instances(i) = parse(&["instances", "-d", "h", "--ps", "--details", "--json"])
        else {
            panic!("not instances")
        };
        assert!(i.ps && i.details && i.json);
        let Command::Logs(l) = parse(&["logs", "-d", "h", "web/1", "--dir", "/tmp"]) else {
            panic!("not logs")
        };
        assert_eq!((l.target.as_str(), l.dir.to_str()), ("web/1", Some("/tmp")));
    }

    /// `ssh` takes bosh's flags (`-c`, repeated `--opts`, `--gw-*`); `scp` takes `-r` and two sides.
    #[test]
    fn ssh_and_scp_parse_bosh_flags() {
        let Command::Ssh(s) = parse(&[
            "ssh",
            "-d",
            "h",
            "web/0",
            "-c",
            "uptime",
            "--opts",
            "-L8080:localhost:8080",
            "--opts=-v",
            "--gw-host",
            "jump",
            "--gw-user",
            "me",
        ]) else {
            panic!("not ssh")
        };
        assert_eq!(s.deployment.deployment, "h");
        assert_eq!((s.target.as_deref(), s.command.as_deref()), (Some("web/0"), Some("uptime")));
        assert_eq!(s.opts, ["-L8080:localhost:8080", "-v"]);
        assert_eq!(
            (s.gateway.gw_host.as_deref(), s.gateway.gw_user.as_deref()),
            (Some("jump"), Some("me"))
        );
        let Command::Ssh(s) = parse(&["ssh", "-d", "h"]) else { panic!("not ssh") };
        assert_eq!((s.target, s.command), (None, None));
        let Command::Scp(c) = parse(&["scp", "-d", "h", "-r", "web/0:/var/vcap/sys/log", "./logs"])
        else {
            panic!("not scp")
        };
        assert!(c.recursive);
        assert_eq!(
            (c.source.as_str(), c.destination.as_str()),
            ("web/0:/var/vcap/sys/log", "./logs")
        );
        let e = Cli::try_parse_from(["boshctl", "scp", "-d", "h", "only-one"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = Cli::try_parse_from(["boshctl", "ssh", "-d", "h", "--gw-user", "me"]).unwrap_err();
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "--gw-user needs --gw-host"
        );
    }

    /// Deployment verbs, listings with `--json`, and `up`/`down` parse.
    #[test]
    fn deployment_listing_and_environment_verbs_parse() {
        let Command::DeleteDeployment(d) = parse(&["delete-deployment", "-d", "h", "--force"])
        else {
            panic!("not delete-deployment")
        };
        assert!(d.force);
        assert!(matches!(parse(&["manifest", "-d", "h"]), Command::Manifest(_)));
        assert!(matches!(parse(&["variables", "-d", "h", "--json"]), Command::Variables(_)));
        assert!(matches!(parse(&["links", "-d", "h", "--json"]), Command::Links(_)));
        for listing in ["deployments", "configs", "releases", "stemcells", "tasks", "vms", "events"]
        {
            parse(&[listing, "--json"]);
        }
        let Command::Deployments(l) =
            parse(&["deployments", "--connect-timeout", "2s", "--request-timeout", "500ms"])
        else {
            panic!("not deployments")
        };
        assert_eq!(l.director.connect_timeout, std::time::Duration::from_secs(2));
        assert_eq!(l.director.request_timeout, std::time::Duration::from_millis(500));
        assert_eq!(l.director.idle_timeout, std::time::Duration::from_secs(45), "the default");
        let Command::Up(u) = parse(&["up", "--data-dir", "/tmp/x"]) else { panic!("not up") };
        assert_eq!(u.data_dir.to_str(), Some("/tmp/x"));
        assert!(matches!(parse(&["down"]), Command::Down(_)));
    }
}
