//! `boshctl interpolate`: ops files and variables applied locally, as `bosh interpolate` does.

use std::{io::Read, path::Path};

use anyhow::Context;
use bosh_api::interpolate::{self as interp, InterpolateOptions, Ops, Pointer, Vars};
use indexmap::IndexMap;
use serde_json::Value;

/// Flags of `boshctl interpolate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The YAML file to interpolate (`-` for stdin).
    pub file: String,
    /// Ops files and variables.
    #[command(flatten)]
    pub sources: Sources,
    /// Print only the value at this path (e.g. `/instance_groups/name=web/instances`).
    #[arg(long = "path", value_name = "PATH")]
    pub path: Option<String>,
}

/// The ops-file and variable flags every command that reads a YAML
/// document takes (`interpolate`, `update-cloud-config`, `deploy`, ...).
#[derive(Debug, Default, clap::Args)]
pub struct Sources {
    /// Ops file to apply, in order (repeatable).
    #[arg(short = 'o', long = "ops-file", value_name = "PATH")]
    pub ops_files: Vec<String>,
    /// A variable, `name=value`; the value is read as YAML, and a dotted
    /// name (`a.b=c`) sets a key of map `a` (repeatable).
    #[arg(short = 'v', long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// A YAML file of variables; dotted names nest as with `-v` (repeatable; later files win).
    #[arg(short = 'l', long = "vars-file", value_name = "PATH")]
    pub vars_files: Vec<String>,
    /// A variable whose value is a file's contents, `name=path` (repeatable).
    #[arg(long = "var-file", value_name = "NAME=PATH")]
    pub var_files: Vec<String>,
    /// Take variables from environment variables `PREFIX_name` (repeatable).
    #[arg(long = "vars-env", value_name = "PREFIX")]
    pub vars_env: Vec<String>,
    /// Fail when a variable has no value.
    #[arg(long = "var-errs")]
    pub var_errs: bool,
    /// Fail when a given variable is not used.
    #[arg(long = "var-errs-unused")]
    pub var_errs_unused: bool,
}

pub(crate) fn read(path: &str) -> anyhow::Result<String> {
    if path == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("failed to read stdin")?;
        return Ok(s);
    }
    std::fs::read_to_string(Path::new(path)).with_context(|| format!("failed to read {path}"))
}

/// Builds the variables as bosh-cli does: one set from `--vars-env`, `-l`
/// files, `--var-file` and `-v`, each later source winning over the
/// earlier ones and dotted names nesting (`-v a.b=c` is key `b` of `a`).
fn variables(args: &Sources) -> anyhow::Result<Vars> {
    let mut sources = Vec::new();
    for prefix in &args.vars_env {
        sources.push(interp::vars_from_env(prefix, std::env::vars()));
    }
    for path in &args.vars_files {
        sources.push(interp::parse_vars_file(&read(path)?, path)?);
    }
    let mut files = IndexMap::new();
    for arg in &args.var_files {
        let (k, path) = arg
            .split_once('=')
            .ok_or_else(|| bad_var(format!("--var-file {arg}: expected name=path")))?;
        files.insert(k.to_string(), Value::String(read(path)?));
    }
    sources.push(files);
    let mut kvs = IndexMap::new();
    for arg in &args.vars {
        let (k, v) = interp::parse_kv(arg).map_err(|e| bad_var(format!("-v {arg}: {e}")))?;
        kvs.insert(k, v);
    }
    sources.push(kvs);
    let mut vars = Vars::new();
    vars.push_layer(interp::static_vars(sources)?);
    Ok(vars)
}

/// Reads `file` and applies the ops files and variables of `sources`,
/// optionally extracting `path`.
pub fn load(file: &str, sources: &Sources, path: Option<&str>) -> anyhow::Result<Value> {
    let file_name = if file == "-" { "<stdin>" } else { file };
    let doc = bosh_api::yaml::parse_value(&read(file)?, file_name)?;
    let mut ops = Vec::with_capacity(sources.ops_files.len());
    for p in &sources.ops_files {
        ops.push(Ops::parse(&read(p)?, p)?);
    }
    let vars = variables(sources)?;
    let path = match path {
        Some(p) => Some(
            Pointer::parse(p)
                .map_err(|e| interp::Error::Find { path: p.to_string(), message: e })?,
        ),
        None => None,
    };
    let opts = InterpolateOptions {
        expect_all_keys: sources.var_errs,
        expect_all_vars_used: sources.var_errs_unused,
    };
    Ok(interp::evaluate(doc, &ops, &vars, opts, path.as_ref())?)
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let out = load(&args.file, &args.sources, args.path.as_deref())?;
    // With --path a string prints bare, as bosh does, so `$(boshctl int
    // --path ...)` is the value; anything else as go-yaml v2 prints it.
    match out {
        Value::String(s)
            if args.path.is_some() && bosh_api::yaml::non_finite_spelling(&s).is_none() =>
        {
            println!("{s}")
        }
        other => print!("{}", bosh_api::yaml::to_bosh_string(&other)),
    }
    Ok(())
}

/// Whether an error is the user's input being wrong (as opposed to the tool failing).
pub fn is_bad_input(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.is::<interp::Error>()
            || e.is::<bosh_api::yaml::YamlError>()
            || e.is::<bosh_api::manifest::Error>()
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(io.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData)
            })
    })
}

fn bad_var(message: String) -> interp::Error {
    interp::Error::Var { messages: vec![message] }
}
