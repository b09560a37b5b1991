//! Writes the example configs and a deployment from `examples/manifests/`
//! into etcd the way a GitOps tool would (straight into the spec keys), then
//! waits for boshd's validators to judge them and prints the verdicts.
//!
//! `cargo run -p hack --bin load-examples -- --etcd 127.0.0.1:2379 --etcd-ca
//! .bosh-rs/etcd-tls/ca.crt --etcd-cert .bosh-rs/etcd-tls/client.crt
//! --etcd-key .bosh-rs/etcd-tls/client.key` (the certificates `boshctl up` made).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bosh_api::meta::find_condition;
use bosh_api::objects::ConditionType;
use bosh_api::objects::{ConfigSpec, ConfigType, DeploymentSpec};
use bosh_api::store::{Store, StoreConfig, TlsFiles};
use bosh_api::{ConditionStatus, Kind, Object, ObjectMeta};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// etcd endpoint.
    #[arg(long, env = "BOSH_ETCD")]
    etcd: String,
    /// The CA of etcd's server certificate (with `--etcd-cert` and `--etcd-key`).
    #[arg(long, env = "BOSH_ETCD_CA", requires_all = ["etcd_cert", "etcd_key"])]
    etcd_ca: Option<PathBuf>,
    /// The client certificate etcd requires.
    #[arg(long, env = "BOSH_ETCD_CERT", requires_all = ["etcd_ca", "etcd_key"])]
    etcd_cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, env = "BOSH_ETCD_KEY", requires_all = ["etcd_ca", "etcd_cert"])]
    etcd_key: Option<PathBuf>,
    /// Key root.
    #[arg(long, default_value = "/bosh")]
    root: String,
    /// Directory holding cloud-config.yml, runtime-config.yml and the deployment.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/manifests"))]
    dir: PathBuf,
    /// The deployment manifest in that directory.
    #[arg(long, default_value = "hello.yml")]
    deployment: String,
}

fn read_yaml(path: &PathBuf) -> Result<serde_json::Value> {
    let src =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bosh_api::yaml::parse_value(&src, &path.display().to_string())?)
}

/// Creates the object, or replaces its spec if it exists (compare-and-swap).
async fn put<S: Kind>(store: &Store, name: &str, spec: S) -> Result<Object<S>> {
    match store.try_get::<S>(None, name).await? {
        Some(mut o) if o.spec == spec => {
            o.spec = spec;
            Ok(o)
        }
        Some(mut o) => {
            o.spec = spec;
            Ok(store.update_spec(&o).await?)
        }
        None => Ok(store.create(&Object::new(ObjectMeta::named(name), spec)).await?),
    }
}

/// Waits until the validator has judged this generation; prints the verdict.
async fn verdict<S: Kind>(
    store: &Store,
    obj: &Object<S>,
    conditions: fn(&S::Status) -> &[bosh_api::Condition],
) -> Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o: Object<S> = store.get(None, &obj.metadata.name).await?;
        if let Some(c) = find_condition(conditions(&o.status), ConditionType::Invalid)
            && c.observed_revision >= obj.metadata.generation
        {
            let ok = c.status == ConditionStatus::False;
            println!("{} {}: {}", S::KIND, obj.metadata.name, if ok { "valid" } else { "INVALID" });
            for line in c.message.lines() {
                println!("    {line}");
            }
            return Ok(ok);
        }
        if Instant::now() > deadline {
            bail!(
                "boshd did not validate {} {} within 60 s (is it running?)",
                S::KIND,
                obj.metadata.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tls = match (args.etcd_ca, args.etcd_cert, args.etcd_key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles { ca, cert, key }),
        _ => None,
    };
    // No secrets key: this writes objects only, never secrets.
    let config = StoreConfig { endpoints: vec![args.etcd.clone()], tls, secrets_key: None };
    let store = Store::connect(&config, &args.root)
        .await
        .with_context(|| format!("connecting to etcd at {}", args.etcd))?;
    let cloud = ConfigSpec {
        type_: ConfigType::Cloud,
        content: read_yaml(&args.dir.join("cloud-config.yml"))?,
    };
    let runtime = ConfigSpec {
        type_: ConfigType::Runtime,
        content: read_yaml(&args.dir.join("runtime-config.yml"))?,
    };
    let manifest = read_yaml(&args.dir.join(&args.deployment))?;
    let name = manifest["name"].as_str().context("deployment.yml has no name")?.to_string();

    let cloud = put(&store, "cloud/default", cloud).await?;
    let runtime = put(&store, "runtime/default", runtime).await?;
    let dep = put(&store, &name, DeploymentSpec { manifest, ..Default::default() }).await?;

    let mut ok = verdict(&store, &cloud, |s| &s.conditions).await?;
    ok &= verdict(&store, &runtime, |s| &s.conditions).await?;
    ok &= verdict(&store, &dep, |s| &s.conditions).await?;
    if !ok {
        bail!("an example was judged invalid");
    }
    Ok(())
}
