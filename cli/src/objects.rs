//! `boshctl get` and `boshctl watch`: any kind, as a table, YAML or JSON.
//!
//! Objects of every kind are shown alike, so they are read as
//! [`ObjectSummary`] for tables and summary lines, and printed as the
//! director sent them for YAML and JSON.

use anyhow::{Result, bail};
use bosh_api::Kind;
use bosh_api::objects::{
    ConfigSpec, DeploymentSpec, DiskSpec, ErrandRunSpec, EventSpec, InstanceSpec, ReleaseSpec,
    StemcellSpec, TaskSpec,
};
use bosh_api::wire::{List, ListQuery, ObjectSummary, WatchEvent};
use comfy_table::{Table, presets::NOTHING};
use serde_json::Value;

use crate::director::{Director, DirectorArgs};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table (lists) or YAML (one object).
    Table,
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// Flags of `boshctl get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The kind: releases, stemcells, configs, deployments, instances, disks, tasks, events.
    pub kind: String,
    /// One object's name (e.g. `cloud/default`); all objects when omitted.
    pub name: Option<String>,
    /// Only names starting with this (e.g. a deployment's instances: `cf/`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `boshctl watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The kind to watch.
    pub kind: String,
    /// Replay changes from this etcd revision (default: list, then follow).
    #[arg(long)]
    pub from: Option<i64>,
    /// Print each event as a JSON line instead of a summary line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// The API's plural for a kind name as users type it.
pub fn plural(kind: &str) -> Result<&'static str> {
    const KINDS: [&str; 9] = [
        ReleaseSpec::PLURAL,
        StemcellSpec::PLURAL,
        ConfigSpec::PLURAL,
        DeploymentSpec::PLURAL,
        InstanceSpec::PLURAL,
        DiskSpec::PLURAL,
        TaskSpec::PLURAL,
        EventSpec::PLURAL,
        ErrandRunSpec::PLURAL,
    ];
    let k = kind.to_ascii_lowercase();
    match KINDS.iter().find(|p| **p == k || p.strip_suffix('s') == Some(&k)) {
        Some(p) => Ok(p),
        None => bail!("unknown kind {kind:?}: expected one of {}", KINDS.join(", ")),
    }
}

/// A one-word summary of an object's conditions, e.g. `Invalid=False`.
fn conditions(o: &ObjectSummary) -> String {
    o.status
        .conditions
        .iter()
        .map(|c| format!("{}={}", c.type_, c.status.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

fn print(v: &Value, output: Output) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Yaml | Output::Table => print!("{}", bosh_api::yaml::to_string(v)?),
    }
    Ok(())
}

/// Runs `boshctl get`.
pub async fn get(args: GetArgs) -> Result<()> {
    let plural = plural(&args.kind)?;
    let d = Director::resolve(&args.director)?;
    if let Some(name) = &args.name {
        let o: Value = d.get(&format!("/v1/{plural}/{name}")).await?;
        return print(&o, args.output);
    }
    let path = format!("/v1/{plural}");
    let query = ListQuery { prefix: args.prefix.clone().unwrap_or_default() };
    if args.output != Output::Table {
        let list: List<Value> = d.get_with(&path, &query).await?;
        return print(&serde_json::to_value(list)?, args.output);
    }
    let list: List<ObjectSummary> = d.get_with(&path, &query).await?;
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["NAME", "GENERATION", "OBSERVED", "CONDITIONS"]);
    for o in &list.items {
        t.add_row([
            o.metadata.name.clone(),
            o.metadata.generation.to_string(),
            o.status.observed_revision.to_string(),
            conditions(o),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// One object the director cannot use (its stored value does not decode).
fn print_quarantined(q: &bosh_api::wire::objects::Quarantined) {
    println!("QUARANTINED {} {}", q.name, q.reason);
}

/// Prints one watch event as a summary line.
fn print_summary(ev: WatchEvent<ObjectSummary>) {
    let line = |what: &str, o: &ObjectSummary| {
        println!("{what}  {} gen={} {}", o.metadata.name, o.metadata.generation, conditions(o));
    };
    match ev {
        WatchEvent::Relisted { objects, quarantined, .. } => {
            objects.iter().for_each(|o| line("LISTED ", o));
            quarantined.iter().for_each(print_quarantined);
        }
        WatchEvent::Quarantined { object } => print_quarantined(&object),
        WatchEvent::Applied { object } => line("APPLIED", &object),
        WatchEvent::Deleted { name, .. } => println!("DELETED  {name}"),
        WatchEvent::Keepalive | WatchEvent::Unknown => {}
    }
}

/// Runs `boshctl watch` until interrupted or the director goes away.
pub async fn watch(args: WatchArgs) -> Result<()> {
    let plural = plural(&args.kind)?;
    let d = Director::resolve(&args.director)?;
    if args.json {
        // The objects as the director sent them, whatever their kind.
        return d
            .watch::<Value>(plural, args.from, |ev| {
                println!("{}", serde_json::to_string(&ev)?);
                Ok(())
            })
            .await;
    }
    d.watch::<ObjectSummary>(plural, args.from, |ev| {
        print_summary(ev);
        Ok(())
    })
    .await
}
