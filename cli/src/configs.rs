//! Config verbs: `update-config`, `config`, `configs`, and the cloud and
//! runtime shorthands, with ops files and variables as bosh takes them.

use anyhow::Result;
use bosh_api::meta::find_condition;
use bosh_api::objects::{ConditionType, ConfigSpec, ConfigType};
use bosh_api::wire::List;
use bosh_api::{ConditionStatus, Object, ObjectMeta};
use comfy_table::{Table, presets::NOTHING};

use crate::director::{Director, DirectorArgs};
use crate::interpolate::{self, Sources};

/// Flags of `update-config`.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// The config's type: cloud, runtime, cpi or resurrection.
    #[arg(long = "type", value_enum)]
    pub type_: Option<TypeArg>,
    /// The config's name.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// The YAML file (`-` for stdin).
    pub file: String,
    #[command(flatten)]
    pub sources: Sources,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `config`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The config's type.
    #[arg(long = "type", value_enum)]
    pub type_: Option<TypeArg>,
    /// The config's name.
    #[arg(long, default_value = "default")]
    pub name: String,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Config types on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TypeArg {
    /// Cloud config.
    Cloud,
    /// Runtime config.
    Runtime,
    /// CPI config.
    Cpi,
    /// Resurrection config.
    Resurrection,
}

impl From<TypeArg> for ConfigType {
    fn from(t: TypeArg) -> ConfigType {
        match t {
            TypeArg::Cloud => ConfigType::Cloud,
            TypeArg::Runtime => ConfigType::Runtime,
            TypeArg::Cpi => ConfigType::Cpi,
            TypeArg::Resurrection => ConfigType::Resurrection,
        }
    }
}

/// Runs `update-config` (or a shorthand, which passes its fixed type).
pub async fn update(args: UpdateArgs, fixed: Option<ConfigType>) -> Result<()> {
    let type_: ConfigType = match fixed.or(args.type_.map(Into::into)) {
        Some(t) => t,
        None => anyhow::bail!("--type is required (cloud, runtime, cpi or resurrection)"),
    };
    let content = interpolate::load(&args.file, &args.sources, None)?;
    let d = Director::resolve(&args.director)?;
    let name = format!("{}/{}", type_.as_str(), args.name);
    let spec = ConfigSpec { type_, content };
    let obj = match d.try_object::<ConfigSpec>(&name).await? {
        Some(current) if current.spec == spec => {
            println!("No changes to {name}");
            return Ok(());
        }
        Some(mut current) => {
            current.spec = spec;
            current
        }
        None => Object::new(ObjectMeta::named(&name), spec),
    };
    let saved = d.put_object(&obj).await?;
    println!("Updated {name} (generation {})", saved.metadata.generation);
    Ok(())
}

/// Runs `config` (or a shorthand): prints the document as YAML.
pub async fn show(args: ShowArgs, fixed: Option<ConfigType>) -> Result<()> {
    let type_: ConfigType = fixed.or(args.type_.map(Into::into)).unwrap_or(ConfigType::Cloud);
    let d = Director::resolve(&args.director)?;
    let name = format!("{}/{}", type_.as_str(), args.name);
    match d.try_object::<ConfigSpec>(&name).await? {
        Some(o) => print!("{}", bosh_api::yaml::to_bosh_string(&o.spec.content)),
        None => anyhow::bail!("no config {name}"),
    }
    Ok(())
}

/// Runs `configs`: every config with its validity.
pub async fn list(args: crate::uploads::ListArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let list: List<Object<ConfigSpec>> = d.get("/v1/configs").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list.items)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["TYPE", "NAME", "GENERATION", "VALID"]);
    for o in &list.items {
        let full = o.metadata.name.as_str();
        let (ty, name) = full.split_once('/').unwrap_or(("", full));
        let valid = match find_condition(&o.status.conditions, ConditionType::Invalid) {
            Some(c) if c.status == ConditionStatus::False => "yes",
            Some(_) => "NO",
            None => "pending",
        };
        t.add_row([ty, name, &o.metadata.generation.to_string(), valid]);
    }
    println!("{t}");
    Ok(())
}

/// Flags of `update-resurrection`.
#[derive(Debug, clap::Args)]
pub struct ResurrectionArgs {
    /// `on` or `off`.
    #[arg(value_parser = ["on", "off"])]
    pub state: String,
    /// Only this deployment (default: every deployment).
    #[arg(short = 'd', long)]
    pub deployment: Option<String>,
    /// Only this instance group of the deployment.
    #[arg(requires = "deployment")]
    pub group: Option<String>,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// The resurrection config `update-resurrection` writes: one rule, named
/// after its scope, so a narrower scope is its own config.
pub fn resurrection_config(args: &ResurrectionArgs) -> (String, serde_json::Value) {
    let mut include = serde_json::Map::new();
    let mut name = "global".to_string();
    if let Some(d) = &args.deployment {
        include.insert("deployments".into(), serde_json::json!([d]));
        name = format!("deployment.{d}");
    }
    if let (Some(d), Some(g)) = (&args.deployment, &args.group) {
        include.insert("instance_groups".into(), serde_json::json!([g]));
        name = format!("deployment.{d}.{g}");
    }
    let mut rule = serde_json::json!({"enabled": args.state == "on"});
    if !include.is_empty() {
        rule["include"] = serde_json::Value::Object(include);
    }
    (name, serde_json::json!({ "rules": [rule] }))
}

/// Runs `update-resurrection on|off [-d NAME [GROUP]]`.
pub async fn update_resurrection(args: ResurrectionArgs) -> Result<()> {
    let (name, content) = resurrection_config(&args);
    let d = Director::resolve(&args.director)?;
    let key = format!("{}/{name}", ConfigType::Resurrection.as_str());
    let spec = ConfigSpec { type_: ConfigType::Resurrection, content };
    let obj = match d.try_object::<ConfigSpec>(&key).await? {
        Some(mut current) => {
            current.spec = spec;
            current
        }
        None => Object::new(ObjectMeta::named(&key), spec),
    };
    d.put_object(&obj).await?;
    println!("Resurrection {} for {}", args.state, name.replace('.', " "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> ResurrectionArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: ResurrectionArgs,
        }
        let mut argv = vec!["x"];
        argv.extend_from_slice(v);
        <P as clap::Parser>::parse_from(argv).a
    }

    /// Each scope is its own config with one rule.
    #[test]
    fn resurrection_scopes() {
        let (n, c) = resurrection_config(&args(&["off"]));
        assert_eq!((n.as_str(), c), ("global", serde_json::json!({"rules": [{"enabled": false}]})));
        let (n, c) = resurrection_config(&args(&["on", "-d", "cf", "web"]));
        assert_eq!(n, "deployment.cf.web");
        assert_eq!(
            c,
            serde_json::json!({"rules": [{"enabled": true, "include": {"deployments": ["cf"], "instance_groups": ["web"]}}]})
        );
    }
}
