//! boshd: the bosh-rs director. Runs the controllers against etcd.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bosh_api::store::{SecretsKey, Store, StoreConfig, TlsFiles};
use bosh_controllers::runtime::ElectionConfig;
use bosh_controllers::server::daemon::{self, Options};
use bosh_controllers::world::director::Director;
use bosh_controllers::world::nats_server::ManagedNats;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The bosh-rs director.
#[derive(Debug, Parser)]
#[command(name = "boshd", version, about)]
struct Args {
    /// etcd endpoints, comma-separated (`host:port`).
    #[arg(long, env = "BOSH_ETCD", value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// The CA certificate etcd's server certificate is checked against.
    /// With `--etcd-cert` and `--etcd-key`, boshd connects over TLS with a
    /// client certificate (etcd started with `--client-cert-auth`).
    #[arg(long, env = "BOSH_ETCD_CA", requires_all = ["etcd_cert", "etcd_key"])]
    etcd_ca: Option<PathBuf>,
    /// boshd's client certificate for etcd (PEM).
    #[arg(long, env = "BOSH_ETCD_CERT", requires_all = ["etcd_ca", "etcd_key"])]
    etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "BOSH_ETCD_KEY", requires_all = ["etcd_ca", "etcd_cert"])]
    etcd_key: Option<PathBuf>,
    /// The key secrets are encrypted with before they reach etcd (64 hex
    /// digits; created, 0600, when absent). Kept out of etcd so that
    /// reading etcd does not reveal secrets; replicas must share it.
    /// Default: `encryption-key` in the data dir.
    #[arg(long, env = "BOSH_ENCRYPTION_KEY_FILE")]
    encryption_key_file: Option<PathBuf>,
    /// Key prefix of every object in etcd.
    #[arg(long, env = "BOSH_ETCD_PREFIX", default_value = "/bosh")]
    root: String,
    /// Where boshd runs nats-server for the agents' bus (`host:port`).
    /// boshd renders its configuration (per-agent users) and reloads it.
    #[arg(long, env = "BOSH_NATS_LISTEN", default_value = "127.0.0.1:4222")]
    nats_listen: String,
    /// The nats-server binary.
    #[arg(long, default_value = "nats-server")]
    nats_server: String,
    /// nats-server is run by someone else and shared by several boshd
    /// replicas: boshd renders its configuration (`--nats-config`) and
    /// reloads it (`--nats-pid-file`) but neither starts nor stops it, and
    /// waits for it to come up.
    #[arg(long)]
    nats_external: bool,
    /// nats-server's configuration file (default: in the data dir).
    #[arg(long)]
    nats_config: Option<PathBuf>,
    /// nats-server's pid file (default: in the data dir).
    #[arg(long)]
    nats_pid_file: Option<PathBuf>,
    /// nats-server's monitoring address, written into its configuration;
    /// boshd reads it to confirm reloads (default: a free loopback port
    /// when boshd runs nats-server, none when it is external). Must be a
    /// loopback address: the monitoring port has no authentication.
    #[arg(long, value_parser = loopback_addr)]
    nats_monitor: Option<String>,
    /// Use an external CPI executable (BOSH's protocol) instead of the local CPI.
    #[arg(long)]
    cpi_exe: Option<PathBuf>,
    /// A property of the external CPI (`KEY=VALUE`, repeatable; the value
    /// read as JSON when it parses, else as a string), passed in every
    /// request's context as a CPI config's `properties` are: e.g.
    /// `--cpi-property data_dir=/var/lib/bosh-local-cpi` for
    /// `bosh-local-cpi`.
    #[arg(long = "cpi-property", value_name = "KEY=VALUE", value_parser = cpi_property)]
    cpi_properties: Vec<(String, serde_json::Value)>,
    /// Seconds an external CPI call may take before its process is killed
    /// and the call fails as retryable (default: 10 minutes).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    cpi_timeout_secs: u64,
    /// The local CPI's directory (default: in the data dir). Replicas
    /// share it, as they share an IaaS.
    #[arg(long)]
    cpi_dir: Option<PathBuf>,
    /// The blobstore's directory (default: in the data dir). Replicas
    /// share it.
    #[arg(long)]
    blobstore_dir: Option<PathBuf>,
    /// Another replica's address serving the same blobstore, given to new
    /// VMs as a fallback (repeat for each replica).
    #[arg(long = "blobstore-mirror")]
    blobstore_mirrors: Vec<String>,
    /// This replica's name in leader election (default: random).
    #[arg(long, env = "BOSH_REPLICA")]
    replica: Option<String>,
    /// Leader lease TTL in seconds: a dead replica is replaced within this.
    #[arg(long, default_value_t = 15)]
    lease_ttl_secs: u64,
    /// Concurrent reconciles per controller.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Seconds between an agent's heartbeats (written into new VMs' settings).
    #[arg(long, default_value_t = 30)]
    heartbeat_interval_secs: u64,
    /// Seconds without a heartbeat after which an agent is unresponsive.
    #[arg(long, default_value_t = 60)]
    agent_timeout_secs: u64,
    /// Seconds an instance must stay unresponsive before it is resurrected.
    #[arg(long, default_value_t = 10)]
    resurrection_delay_secs: u64,
    /// Resurrection pauses when at least this many instances of a
    /// deployment are unresponsive ...
    #[arg(long, default_value_t = 5)]
    meltdown_min_down: usize,
    /// ... and they are more than this percentage of it.
    #[arg(long, default_value_t = 20.0)]
    meltdown_percent: f64,
    /// Where health alerts are POSTed as JSON (retried with backoff).
    #[arg(long)]
    alert_webhook: Option<String>,
    /// Seconds between two scans of a deployment for orphaned VMs (tagged
    /// with it, owned by no instance); 0: no scan.
    #[arg(long, default_value_t = 60)]
    orphan_vm_scan_secs: u64,
    /// Seconds an orphaned VM is reported before it is deleted.
    #[arg(long, default_value_t = 3600)]
    orphan_vm_grace_secs: u64,
    /// Seconds between full resyncs of every object.
    #[arg(long, default_value_t = 300)]
    resync_secs: u64,
    /// A deployment whose instance group asks for more instances is refused.
    #[arg(long, default_value_t = 10_000)]
    max_instances_per_group: u32,
    /// A deployment asking for more instances in all is refused.
    #[arg(long, default_value_t = 20_000)]
    max_instances_per_deployment: u32,
    /// A manifest with a property value larger than this (as JSON) is refused.
    #[arg(long, default_value_t = 1 << 20)]
    max_property_bytes: usize,
    /// A YAML document (manifest, config, ops file) whose aliases replay
    /// more events than this is refused while it is parsed (alias bombs).
    #[arg(long, default_value_t = bosh_api::yaml::Limits::default().max_alias_events)]
    yaml_max_alias_events: usize,
    /// A YAML document nested deeper than this is refused.
    #[arg(long, default_value_t = bosh_api::yaml::Limits::default().max_depth)]
    yaml_max_depth: usize,
    /// A template render (one Ruby process per batch) is killed after this.
    #[arg(long, default_value_t = 60)]
    render_timeout_secs: u64,
    /// An errand run that sets no `timeoutSeconds` fails after this many
    /// seconds (preparing its VMs and its `bin/run`s included).
    #[arg(long, default_value_t = bosh_api::objects::DEFAULT_ERRAND_TIMEOUT_SECS)]
    errand_timeout_secs: u64,
    /// A template render whose output passes this is killed.
    #[arg(long, default_value_t = 64 << 20)]
    render_max_output_bytes: usize,
    /// Address of the HTTP API (and the blobstore, under /blobs).
    #[arg(long, env = "BOSH_LISTEN", default_value = "127.0.0.1:25555")]
    listen: String,
    /// Address of the agents' side of the director: the blobstore alone
    /// (token and sha256 checked), where VMs reach it. Container VMs have
    /// their own loopback, so `boshctl up` binds this (and nats-server) on
    /// every address and the local CPI points agents at their gateway;
    /// the API and etcd stay on loopback, out of the VMs' reach. Without
    /// it, agents use the blobstore under the API's address.
    #[arg(long, env = "BOSH_VM_LISTEN")]
    vm_listen: Option<String>,
    /// Largest JSON or YAML request body the API reads (a manifest, a
    /// config); larger ones are refused with 413.
    #[arg(long, env = "BOSH_MAX_REQUEST_BYTES", default_value_t = bosh_controllers::server::api::limits::DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: u64,
    /// Largest release or stemcell upload the API accepts (streamed to disk).
    #[arg(long, env = "BOSH_MAX_UPLOAD_BYTES", default_value_t = bosh_controllers::server::api::limits::DEFAULT_MAX_UPLOAD_BYTES)]
    max_upload_bytes: u64,
    /// Largest object (e.g. a deployment with its expanded manifest) one
    /// etcd write may carry. Must not exceed etcd's `--max-request-bytes`
    /// (default 1.5 MiB); raise both together.
    #[arg(long, env = "BOSH_MAX_OBJECT_BYTES", default_value_t = bosh_api::store::DEFAULT_MAX_WRITE_BYTES)]
    max_object_bytes: usize,
    /// boshd's own data: API and blobstore tokens, blobs, CPI state.
    #[arg(long, env = "BOSH_DATA_DIR", default_value = ".bosh-rs/boshd")]
    data_dir: PathBuf,
    /// Most bytes one release or stemcell upload may unpack to, counting
    /// the job and package tarballs inside it (default 2 GiB): a small
    /// gzip can expand a thousandfold.
    #[arg(long, default_value_t = 2 << 30)]
    max_upload_unpacked_bytes: u64,
    /// Most entries one upload may hold, nested tarballs included.
    #[arg(long, default_value_t = 100_000)]
    max_upload_entries: u64,
    /// Most uploads verified at once; more are answered 503.
    #[arg(long, default_value_t = 2)]
    max_concurrent_uploads: usize,
    /// Where to serve BOSH DNS (UDP and TCP), repeatable: an address VMs
    /// reach, on port 53 since resolv.conf names no port (e.g. the
    /// bridge gateway), and loopback for the operator. None: no DNS.
    #[arg(long = "dns-listen")]
    dns_listen: Vec<std::net::SocketAddr>,
    /// A resolver that names outside the DNS domain are forwarded to,
    /// repeatable, asked in order. None: such names are REFUSED (no open
    /// recursion).
    #[arg(long = "dns-recursor")]
    dns_recursors: Vec<std::net::SocketAddr>,
    /// How long each recursor gets to answer.
    #[arg(long, default_value_t = 2000)]
    dns_recursor_timeout_ms: u64,
    /// The DNS root domain BOSH names end in.
    #[arg(long, default_value = "bosh")]
    dns_domain: String,
}

/// Parses `--cpi-property KEY=VALUE`.
fn cpi_property(s: &str) -> Result<(String, serde_json::Value), String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    if k.is_empty() {
        return Err("expected KEY=VALUE with a non-empty KEY".into());
    }
    let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
    Ok((k.to_string(), value))
}

/// Accepts `host:port` only on a loopback address (127.0.0.0/8, `::1`,
/// `localhost`).
fn loopback_addr(s: &str) -> Result<String, String> {
    let (host, port) = s.rsplit_once(':').ok_or("expected host:port")?;
    port.parse::<u16>().map_err(|e| format!("port {port:?}: {e}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback =
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{host} is not a loopback address; nats-server's monitoring port has no authentication"
        ))
    }
}

/// The token kept in etcd as secret `name`, so every replica accepts the
/// same one; created from the token file `path` when there is one (a
/// director from before tokens moved to etcd), else at random. The file is
/// (re)written (0600): `boshctl` reads it.
async fn token(store: &Store, name: &str, path: &Path) -> anyhow::Result<String> {
    let from_file = match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let seed = from_file.clone().unwrap_or_else(|| {
        use rand::distr::{Alphanumeric, SampleString};
        Alphanumeric.sample_string(&mut rand::rng(), 40)
    });
    let stored = store
        .create_secret(name, seed.as_bytes())
        .await
        .with_context(|| format!("reading or creating secret {name}"))?;
    let t = String::from_utf8(stored).with_context(|| format!("secret {name} is not text"))?;
    if from_file.as_deref() != Some(t.as_str()) {
        bosh_controllers::libs::secret_file::write(path, t.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(t)
}

/// The director's handles on the world: the CPI, a nats-server with
/// per-agent users (run by boshd unless `--nats-external`), and a director
/// connection to the agents.
async fn director(
    args: &Args,
    store: &Store,
    blobs: Arc<dyn bosh_blobstore::Storage>,
    blobstore: bosh_api::agent::BlobstoreSettings,
) -> anyhow::Result<(Director, Option<ManagedNats>)> {
    use bosh_controllers::world::bus::{self, Bus, BusConfig};
    let dir = &args.data_dir;
    let mut cfg = BusConfig::generate(
        args.nats_config.clone().unwrap_or_else(|| dir.join("nats.conf")),
        args.nats_pid_file.clone().unwrap_or_else(|| dir.join("nats.pid")),
        args.nats_listen.clone(),
    );
    cfg.director = bus::director_credentials(store)
        .await
        .context("reading or creating the director's NATS credentials")?;
    if args.nats_external || args.nats_monitor.is_some() {
        cfg.monitor = args.nats_monitor.clone();
    }
    let bus = Bus::new(store.clone(), cfg.clone());
    bus.sync().await.context("rendering the nats-server configuration")?;
    let nats = if args.nats_external {
        None
    } else {
        Some(
            ManagedNats::start(
                &args.nats_server,
                &cfg.config_path,
                &cfg.pid_file,
                &dir.join("nats.log"),
                &args.nats_listen,
            )
            .await?,
        )
    };
    let mut connect = async_nats::ConnectOptions::with_user_and_password(
        cfg.director.user.clone(),
        cfg.director.password.clone(),
    );
    if args.nats_external {
        // Whoever runs nats-server may start it after us (it reads the
        // configuration we just rendered): keep trying in the background.
        connect = connect.retry_on_initial_connect();
    }
    let conn = connect
        .connect(bus.url())
        .await
        .with_context(|| format!("connecting to nats-server at {}", bus.url()))?;
    let cpi_dir = args.cpi_dir.clone().unwrap_or_else(|| dir.join("cpi"));
    let cpi: Arc<dyn bosh_controllers::world::cpi::Cpi> = match &args.cpi_exe {
        Some(exe) => {
            // As BOSH's director sets a CPI up: its `info` decides the API
            // version spoken. Its calls log to the task they are made for.
            // (`connect` logs what was negotiated.)
            let (ext, _) = bosh_controllers::world::cpi::external::ExternalCpi::new(
                "external",
                exe,
                args.cpi_properties.iter().cloned().collect(),
            )
            .with_timeout(std::time::Duration::from_secs(args.cpi_timeout_secs))
            .with_log_sink(Arc::new(bosh_controllers::libs::tasks::CpiTaskLog::new(store.clone())))
            .connect()
            .await
            .context("setting up the external CPI")?;
            Arc::new(ext)
        }
        // The local CPI's audit log records the etcd revision each mutating
        // call was admitted at (one revision read per call): what lets the
        // fault matrix's invariant checker see, for a real boshd process,
        // that every call's intent was written first (I4) and that no call
        // from a deposed leader got through after its successor was elected
        // (I5). The local CPI is for development and tests; the read is cheap.
        None => Arc::new(
            bosh_controllers::world::cpi::local::LocalCpi::open(&cpi_dir)
                .with_context(|| format!("opening the local CPI in {}", cpi_dir.display()))?
                .with_audit_store(store.clone()),
        ),
    };
    info!(nats = %bus.url(), cpi = cpi.name(), "director ready");
    let cpis = bosh_controllers::world::cpis::CpiRegistry::new(
        bosh_controllers::world::cpis::LocalDefaults {
            data_dir: cpi_dir,
            image_cache: None,
            audit_store: Some(store.clone()),
        },
    );
    let director = Director {
        store: store.clone(),
        cpi,
        cpis: Arc::new(cpis),
        nats_url: bus.url(),
        bus: Arc::new(bus),
        agents: bosh_controllers::world::agent_client::AgentClient::new(conn),
        blobs,
        blobstore,
        heartbeat_interval_secs: args.heartbeat_interval_secs,
        addresses: Default::default(),
    };
    Ok((director, nats))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut args = Args::parse();
    // Paths derived from the data dir reach agents and scripts that run
    // elsewhere; make them absolute once.
    args.data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    // Tokens, the encryption key and the nats-server configuration live
    // here: a new data dir is private.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let key_file =
        args.encryption_key_file.clone().unwrap_or_else(|| args.data_dir.join("encryption-key"));
    let secrets_key = SecretsKey::load_or_create(&key_file)
        .with_context(|| format!("loading the secrets encryption key {}", key_file.display()))?;
    let tls = match (&args.etcd_ca, &args.etcd_cert, &args.etcd_key) {
        (Some(ca), Some(cert), Some(key)) => {
            Some(TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
        }
        _ => {
            warn!(
                "connecting to etcd without a client certificate (--etcd-ca/--etcd-cert/--etcd-key): anyone who can reach etcd can change the director"
            );
            None
        }
    };
    let config =
        StoreConfig { endpoints: args.etcd.clone(), tls, secrets_key: Some(secrets_key.clone()) };
    let store = Store::connect(&config, &args.root)
        .await
        .with_context(|| format!("connecting to etcd at {}", args.etcd.join(",")))?
        .with_max_write_bytes(args.max_object_bytes);
    let mut election = ElectionConfig {
        ttl: Duration::from_secs(args.lease_ttl_secs),
        ..ElectionConfig::default()
    };
    if let Some(r) = args.replica.clone() {
        election.holder = r;
    }
    info!(etcd = %args.etcd.join(","), root = %args.root, replica = %election.holder, secrets_key = secrets_key.id(), "boshd starting");
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutting down");
        signals.cancel();
    });
    let api_token = token(&store, "director/api-token", &args.data_dir.join("api-token")).await?;
    let blob_token =
        token(&store, "director/blobstore-token", &args.data_dir.join("blobstore-token")).await?;
    let blob_dir = args.blobstore_dir.clone().unwrap_or_else(|| args.data_dir.join("blobstore"));
    let storage: Arc<dyn bosh_blobstore::Storage> =
        Arc::new(bosh_blobstore::LocalStorage::new(blob_dir));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding the API to {}", args.listen))?;
    let addr = listener.local_addr()?;
    let vm_listener = match &args.vm_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the agents' blobstore to {a}"))?,
        ),
        None => None,
    };
    let blob_addr = match &vm_listener {
        // A wildcard address is reached on loopback from the host, and
        // through their gateway from container VMs (the CPI rewrites it).
        Some(l) => std::net::SocketAddr::from(([127, 0, 0, 1], l.local_addr()?.port())),
        None => addr,
    };
    let blobstore = bosh_api::agent::BlobstoreSettings {
        url: format!("http://{blob_addr}"),
        token: blob_token.clone(),
        mirrors: args.blobstore_mirrors.clone(),
    };
    let (director, nats) = director(&args, &store, storage.clone(), blobstore).await?;
    let limits = bosh_controllers::reconcilers::validate::DeploymentLimits {
        max_instances_per_group: args.max_instances_per_group,
        max_instances_per_deployment: args.max_instances_per_deployment,
        max_property_bytes: args.max_property_bytes,
    };
    bosh_api::yaml::set_limits(bosh_api::yaml::Limits {
        max_alias_events: args.yaml_max_alias_events,
        max_depth: args.yaml_max_depth,
    });
    let api_state = bosh_controllers::server::api::ApiState::new(store.clone(), &api_token)
        .with_deployment_limits(limits)
        .with_blobstore(storage.clone(), args.data_dir.join("scratch"))
        .with_upload_limits(bosh_controllers::server::api::UploadLimits {
            max_unpacked_bytes: args.max_upload_unpacked_bytes,
            max_entries: args.max_upload_entries,
            max_concurrent: args.max_concurrent_uploads,
        })
        .with_director(director.clone())
        .with_limits(bosh_controllers::server::api::limits::Limits {
            max_request_bytes: args.max_request_bytes,
            max_upload_bytes: args.max_upload_bytes,
        });
    let vm_side = vm_listener.map(|l| {
        let (storage, token, shutdown) = (storage.clone(), blob_token.clone(), shutdown.clone());
        tokio::spawn(bosh_blobstore::server::serve(l, storage, token, async move {
            shutdown.cancelled().await
        }))
    });
    let router = bosh_controllers::server::api::router(Arc::new(api_state))
        .merge(bosh_blobstore::server::router(storage, blob_token));
    // Where boshctl finds this director by default.
    let discovery = bosh_api::wire::DirectorFile {
        url: format!("http://{addr}"),
        token_file: std::fs::canonicalize(args.data_dir.join("api-token"))?,
    };
    bosh_controllers::libs::secret_file::write(
        &args.data_dir.join("director.json"),
        &serde_json::to_vec(&discovery)?,
    )?;
    info!(%addr, "API listening");
    let api_shutdown = shutdown.clone();
    let api = tokio::spawn(bosh_controllers::server::api::serve(listener, router, async move {
        api_shutdown.cancelled().await
    }));
    let opts = Options {
        workers: args.workers,
        resync: Duration::from_secs(args.resync_secs),
        election,
        health: bosh_controllers::reconcilers::health::HealthConfig {
            agent_timeout: Duration::from_secs(args.agent_timeout_secs),
            resurrection_delay: Duration::from_secs(args.resurrection_delay_secs),
            meltdown_min_down: args.meltdown_min_down,
            meltdown_fraction: args.meltdown_percent / 100.0,
            ..Default::default()
        },
        limits,
        render: bosh_controllers::libs::render::Limits {
            timeout: Duration::from_secs(args.render_timeout_secs),
            max_output: args.render_max_output_bytes,
        },
        orphan_vms: (args.orphan_vm_scan_secs > 0).then(|| {
            bosh_controllers::reconcilers::deployment::orphan_vms::OrphanVmConfig {
                scan: Duration::from_secs(args.orphan_vm_scan_secs),
                grace: Duration::from_secs(args.orphan_vm_grace_secs),
            }
        }),
        errand_timeout: Duration::from_secs(args.errand_timeout_secs),
        reflectors: Default::default(),
    };
    director.cpis.watch_configs(opts.reflectors.get::<bosh_api::objects::ConfigSpec>(&store));
    let dns = if args.dns_listen.is_empty() {
        None
    } else {
        let (udp, tcp) = bosh_controllers::server::dns::bind(&args.dns_listen)?;
        let config = bosh_controllers::server::dns::DnsConfig {
            domain: args.dns_domain.clone(),
            recursors: args.dns_recursors.clone(),
            recursor_timeout: Duration::from_millis(args.dns_recursor_timeout_ms),
        };
        Some(tokio::spawn(daemon::run_dns(
            store.clone(),
            opts.reflectors.clone(),
            config,
            udp,
            tcp,
            shutdown.clone(),
        )))
    };
    tokio::join!(
        daemon::run(store, opts.clone(), shutdown.clone()),
        daemon::run_world(director, &opts, shutdown)
    );
    if let Some(d) = dns {
        d.await?.context("serving DNS")?;
    }
    // nats-server stops last, after every controller let go of the bus.
    drop(nats);
    api.await?.context("serving the API")?;
    if let Some(v) = vm_side {
        v.await?.context("serving the agents' blobstore")?;
    }
    info!("boshd stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    /// `--cpi-property` values are JSON when they parse (numbers, lists),
    /// else strings; a property needs a key.
    #[test]
    fn cpi_properties_read_json_or_strings() {
        use serde_json::json;
        let p = super::cpi_property;
        assert_eq!(p("data_dir=/var/lib/x").unwrap(), ("data_dir".into(), json!("/var/lib/x")));
        assert_eq!(p("n=3").unwrap(), ("n".into(), json!(3)));
        assert_eq!(p(r#"m=["a"]"#).unwrap(), ("m".into(), json!(["a"])));
        assert_eq!(p("e=").unwrap(), ("e".into(), json!("")));
        assert!(p("novalue").is_err() && p("=v").is_err());
    }

    /// Issue 12 item 6: nats-server's monitoring port has no authentication,
    /// so `--nats-monitor` takes loopback addresses only.
    #[test]
    fn nats_monitor_must_be_loopback() {
        for ok in ["127.0.0.1:8222", "127.9.0.1:1", "localhost:8222", "[::1]:8222"] {
            assert!(super::loopback_addr(ok).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:8222", "10.0.0.5:8222", "[::]:8222", "example.com:8222", "8222"] {
            assert!(super::loopback_addr(bad).is_err(), "{bad}");
        }
    }
}
