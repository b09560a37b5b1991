//! `boshctl get` and `boshctl watch`: any kind, as a table, YAML or JSON.

use anyhow::{Result, bail};
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
    const KINDS: [&str; 8] = [
        "releases",
        "stemcells",
        "configs",
        "deployments",
        "instances",
        "disks",
        "tasks",
        "events",
    ];
    let k = kind.to_ascii_lowercase();
    match KINDS.iter().find(|p| **p == k || p.strip_suffix('s') == Some(&k)) {
        Some(p) => Ok(p),
        None => bail!("unknown kind {kind:?}: expected one of {}", KINDS.join(", ")),
    }
}

/// A one-word summary of an object's conditions, e.g. `Invalid=False`.
fn conditions(o: &Value) -> String {
    o["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    format!(
                        "{}={}",
                        c["type"].as_str().unwrap_or("?"),
                        c["status"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
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
    let prefix = args.prefix.as_deref().unwrap_or_default();
    let list: Value = d.get(&format!("/v1/{plural}?prefix={prefix}")).await?;
    if args.output != Output::Table {
        return print(&list, args.output);
    }
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["NAME", "GENERATION", "OBSERVED", "CONDITIONS"]);
    for o in list["items"].as_array().into_iter().flatten() {
        t.add_row([
            o["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            o["metadata"]["generation"].to_string(),
            o["status"]["observedRevision"].as_i64().unwrap_or_default().to_string(),
            conditions(o),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// One object the director cannot use (its stored value does not decode).
fn quarantined(q: &serde_json::Value) {
    println!(
        "QUARANTINED {} {}",
        q["name"].as_str().unwrap_or(""),
        q["reason"].as_str().unwrap_or("")
    );
}

/// Runs `boshctl watch` until interrupted or the director goes away.
pub async fn watch(args: WatchArgs) -> Result<()> {
    let plural = plural(&args.kind)?;
    let d = Director::resolve(&args.director)?;
    d.watch(plural, args.from, |ev| {
        if args.json {
            println!("{ev}");
            return Ok(());
        }
        match ev["type"].as_str() {
            Some("RELISTED") => {
                for o in ev["objects"].as_array().into_iter().flatten() {
                    println!(
                        "LISTED   {} gen={} {}",
                        o["metadata"]["name"].as_str().unwrap_or(""),
                        o["metadata"]["generation"],
                        conditions(o)
                    );
                }
                for q in ev["quarantined"].as_array().into_iter().flatten() {
                    quarantined(q);
                }
            }
            Some("QUARANTINED") => quarantined(&ev["object"]),
            Some("APPLIED") => {
                let o = &ev["object"];
                println!(
                    "APPLIED  {} gen={} {}",
                    o["metadata"]["name"].as_str().unwrap_or(""),
                    o["metadata"]["generation"],
                    conditions(o)
                );
            }
            Some("DELETED") => println!("DELETED  {}", ev["name"].as_str().unwrap_or("")),
            _ => println!("{ev}"),
        }
        Ok(())
    })
    .await
}
