//! The local CPI's operating system image: a Debian root filesystem built
//! with `debootstrap --variant=minbase`, plus the agent and BOSH's
//! `/var/vcap` layout, cached on disk by its inputs.
//!
//! debootstrap takes tens of seconds and downloads a few hundred packages,
//! so the quickstart and the tests must pay for it once per machine, not per
//! run: [`build`] keys the base rootfs by everything that decides its
//! content (suite, mirror, package list, the layout version) and returns an
//! existing `<cache>/<key>/rootfs` at once. The agent is not part of that
//! key: it changes with every build of bosh-rs, and re-running debootstrap
//! for each would make the cache useless to developers and CI. It is added
//! when the image is packed ([`cached_image`]), one image per agent digest
//! next to the base. A build happens in a temporary directory under the
//! cache and is renamed into place only when complete, so an interrupted
//! build never looks cached.
//!
//! The packages come from the machine's configured Debian source
//! ([`configured_mirror`]), since that may be the only mirror it can reach.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The Debian release the image is built from.
pub const SUITE: &str = "bookworm";

/// The stemcell name of an image built here.
pub const STEMCELL_NAME: &str = "bosh-local-debian-bookworm";

/// The `operating_system` of an image built here (what a manifest's
/// `stemcells: [{os: ...}]` names).
pub const OPERATING_SYSTEM: &str = "debian-bookworm";

/// The stemcell format of an image built here: a rootfs tarball, which the
/// runc-based local CPI will accept (the older agent-only image is
/// [`super::FORMAT`]).
pub const FORMAT: &str = "bosh-rs-local-rootfs";

/// Where the agent lives inside the image, as on a real stemcell.
pub const AGENT_PATH: &str = "var/vcap/bosh/bin/bosh-agent";

/// Bumped when what [`build`] does to the rootfs after debootstrap changes,
/// so a cache built by older code is not reused.
const LAYOUT_VERSION: &str = "3";

/// Packages installed on top of minbase: what BOSH jobs expect to find on a
/// stemcell (a shell, core tools, `ps`, `ip`, CA certificates, `/etc/services`,
/// curl), python3 for the sample release's job, and `passwd` for the `vcap`
/// user; `openssh-server` and `sudo` for `boshctl ssh`/`scp`, whose users
/// the agent's `ssh` method makes (BOSH's stemcells have both). The agent
/// itself is a static-enough Rust binary that needs only glibc, which
/// minbase has.
pub const PACKAGES: &[&str] = &[
    "bash",
    "ca-certificates",
    "coreutils",
    "curl",
    "iproute2",
    "netbase",
    "openssh-server",
    "passwd",
    "procps",
    "python3",
    "sudo",
];

/// The groups a stemcell has for `boshctl ssh` users, as BOSH's:
/// `bosh_sudoers` may use sudo without a password ([`SUDOERS`]),
/// `bosh_sshers` marks them.
pub const SSH_GROUPS: &[&str] = &["bosh_sudoers", "bosh_sshers"];

/// `/etc/sudoers.d/bosh_sudoers`, as on BOSH's stemcells.
pub const SUDOERS: &str = "%bosh_sudoers ALL=(ALL) NOPASSWD: ALL\n";

/// BOSH's directories under `/var/vcap`.
pub const VCAP_DIRS: &[&str] = &[
    "var/vcap/bosh/bin",
    "var/vcap/data",
    "var/vcap/store",
    "var/vcap/jobs",
    "var/vcap/packages",
    "var/vcap/sys/log",
    "var/vcap/sys/run",
];

/// A failed rootfs build, naming the step.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// No `deb` source for the suite in the machine's apt configuration.
    #[error("no Debian source for {suite} in /etc/apt/sources.list or /etc/apt/sources.list.d/")]
    NoMirror {
        /// The suite looked for.
        suite: String,
    },
    /// A file or directory operation of `step` failed.
    #[error("{step}: {path}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// debootstrap could not start or exited non-zero.
    #[error("debootstrap {status} (command: {command}); last lines of its log:\n{log_tail}")]
    Debootstrap {
        /// How it ended (`exited with ...` or `could not start: ...`).
        status: String,
        /// The command line, to rerun by hand.
        command: String,
        /// The end of debootstrap's own log, or its output.
        log_tail: String,
    },
    /// A command run inside the new rootfs failed.
    #[error("{step}: `{command}` {status}: {output}")]
    Chroot {
        /// What was being done.
        step: &'static str,
        /// The command.
        command: String,
        /// How it ended.
        status: String,
        /// Its stderr and stdout.
        output: String,
    },
}

fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + use<> {
    let path = path.to_path_buf();
    move |source| RootfsError::Io { step, path, source }
}

/// What decides a rootfs's content.
#[derive(Debug, Clone)]
pub struct RootfsInputs {
    /// The Debian suite, e.g. [`SUITE`].
    pub suite: String,
    /// The mirror URL debootstrap downloads from.
    pub mirror: String,
    /// Packages passed to `--include`.
    pub packages: Vec<String>,
    /// The agent binary copied to [`AGENT_PATH`].
    pub agent: PathBuf,
}

impl RootfsInputs {
    /// The default packages of [`SUITE`] from the machine's configured mirror.
    pub fn for_agent(agent: &Path) -> Result<RootfsInputs, RootfsError> {
        Ok(RootfsInputs {
            suite: SUITE.into(),
            mirror: configured_mirror(SUITE)?,
            packages: PACKAGES.iter().map(|p| p.to_string()).collect(),
            agent: agent.to_path_buf(),
        })
    }
}

/// A built (or cached) rootfs.
#[derive(Debug, Clone)]
pub struct Rootfs {
    /// `<cache>/<key>/rootfs`.
    pub path: PathBuf,
    /// The cache key.
    pub key: String,
    /// The agent binary's sha256 (hex).
    pub agent_sha256: String,
    /// Whether it was already in the cache.
    pub cached: bool,
}

/// The sha256 (hex) of a file.
pub fn sha256_file(path: &Path) -> Result<String, RootfsError> {
    crate::release::file_digest_hex::<Sha256>(path).map_err(io("reading the agent binary", path))
}

/// The cache key of a base rootfs: a digest of the suite, mirror, sorted
/// package list and the layout version. Package order does not matter, as
/// debootstrap's `--include` does not care.
pub fn cache_key(suite: &str, mirror: &str, packages: &[String]) -> String {
    let mut pkgs: Vec<&str> = packages.iter().map(String::as_str).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    let mut h = Sha256::new();
    for part in [LAYOUT_VERSION, suite, mirror, &pkgs.join(",")] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    format!("{suite}-{}", &hex::encode(h.finalize())[..20])
}

/// The machine's configured Debian mirror for `suite`: the first `deb`
/// source naming exactly that suite, from `/etc/apt/sources.list` and then
/// the `.list` and deb822 `.sources` files of `/etc/apt/sources.list.d/`.
pub fn configured_mirror(suite: &str) -> Result<String, RootfsError> {
    let mut texts = Vec::new();
    if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push((false, t));
    }
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let deb822 = p.extension().is_some_and(|e| e == "sources");
            let list = p.extension().is_some_and(|e| e == "list");
            if (deb822 || list)
                && let Ok(t) = fs::read_to_string(&p)
            {
                texts.push((deb822, t));
            }
        }
    }
    texts
        .iter()
        .find_map(
            |(deb822, t)| {
                if *deb822 { mirror_from_deb822(t, suite) } else { mirror_from_list(t, suite) }
            },
        )
        .ok_or_else(|| RootfsError::NoMirror { suite: suite.into() })
}

/// The URI of the first one-line `deb [options] URI SUITE ...` entry for `suite`.
pub fn mirror_from_list(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        // Skip `[arch=amd64 signed-by=...]`.
        let rest = match rest.strip_prefix('[') {
            Some(r) => r.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        (words.next()? == suite).then(|| uri.to_string())
    })
}

/// The first URI of the first deb822 stanza of type `deb` whose `Suites`
/// include `suite` exactly (not `bookworm-security`).
pub fn mirror_from_deb822(text: &str, suite: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let has_suite = field("Suites").is_some_and(|s| s.split_whitespace().any(|s| s == suite));
        if !(is_deb && has_suite) {
            return None;
        }
        field("URIs")?.split_whitespace().next().map(str::to_string)
    })
}

/// Returns the cached rootfs for `inputs`, building it first when absent.
/// `progress` hears one line before a build starts (and nothing on a hit),
/// so a caller can tell the user why the first run takes a while.
pub fn build(
    inputs: &RootfsInputs,
    cache_dir: &Path,
    mut progress: impl FnMut(&str),
) -> Result<Rootfs, RootfsError> {
    let agent_sha256 = sha256_file(&inputs.agent)?;
    let key = cache_key(&inputs.suite, &inputs.mirror, &inputs.packages);
    let entry = cache_dir.join(&key);
    let path = entry.join("rootfs");
    if path.is_dir() {
        return Ok(Rootfs { path, key, agent_sha256, cached: true });
    }
    // One build per machine at a time: concurrent callers (parallel tests
    // on a fresh machine) wait for the first and then find it cached.
    fs::create_dir_all(cache_dir).map_err(io("creating the cache directory", cache_dir))?;
    let lock_path = cache_dir.join(format!("{key}.lock"));
    let lock = fs::File::create(&lock_path).map_err(io("locking the cache entry", &lock_path))?;
    lock.lock().map_err(io("locking the cache entry", &lock_path))?;
    if path.is_dir() {
        return Ok(Rootfs { path, key, agent_sha256, cached: true });
    }
    progress(&format!(
        "Building the {} root filesystem with debootstrap from {} (once per machine; cached in {})",
        inputs.suite,
        inputs.mirror,
        entry.display()
    ));
    fs::create_dir_all(cache_dir).map_err(io("creating the cache directory", cache_dir))?;
    let scratch = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(cache_dir)
        .map_err(io("creating a build directory", cache_dir))?;
    let root = scratch.path().join("rootfs");
    debootstrap(inputs, &root, scratch.path())?;
    add_bosh_layout(&root)?;
    fs::create_dir_all(&entry).map_err(io("creating the cache entry", &entry))?;
    write_inputs(inputs, &entry)?;
    match fs::rename(&root, &path) {
        Ok(()) => {}
        // Another build of the same inputs finished first: use its result.
        Err(_) if path.is_dir() => {}
        Err(e) => return Err(io("moving the rootfs into the cache", &path)(e)),
    }
    Ok(Rootfs { path, key, agent_sha256, cached: false })
}

/// Runs debootstrap into `root`, its output going to `scratch/debootstrap.log`.
fn debootstrap(inputs: &RootfsInputs, root: &Path, scratch: &Path) -> Result<(), RootfsError> {
    let log_path = scratch.join("debootstrap.log");
    let log = fs::File::create(&log_path).map_err(io("creating debootstrap's log", &log_path))?;
    let err_log = log.try_clone().map_err(io("creating debootstrap's log", &log_path))?;
    let mut cmd = Command::new("debootstrap");
    cmd.arg("--variant=minbase")
        .arg(format!("--include={}", inputs.packages.join(",")))
        .arg(&inputs.suite)
        .arg(root)
        .arg(&inputs.mirror)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err_log);
    let command = format!("{cmd:?}").replace('"', "");
    let status = match cmd.status() {
        Ok(s) if s.success() => return Ok(()),
        Ok(s) => format!("exited with {s}"),
        Err(e) => format!("could not start: {e}"),
    };
    // debootstrap's own log says which package failed; its output says why
    // it gave up. Show the end of both.
    let mut log_tail = tail(&root.join("debootstrap/debootstrap.log"), 15);
    let out = tail(&log_path, 10);
    if !out.is_empty() {
        if !log_tail.is_empty() {
            log_tail.push_str("\n--- output ---\n");
        }
        log_tail.push_str(&out);
    }
    Err(RootfsError::Debootstrap { status, command, log_tail })
}

/// The last `n` lines of a file, or nothing when it cannot be read.
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// BOSH's `/var/vcap` directories, the `vcap` user and the ssh groups;
/// drops the downloaded `.deb` files debootstrap leaves behind, which only
/// make the image bigger, and the SSH host keys openssh-server's install
/// made: every VM of the image would share them, so the agent makes its
/// VM's own (`ssh-keygen -A`) when `ssh` is first set up.
fn add_bosh_layout(root: &Path) -> Result<(), RootfsError> {
    for d in VCAP_DIRS {
        let p = root.join(d);
        fs::create_dir_all(&p).map_err(io("creating BOSH's directories", &p))?;
    }
    chroot(
        root,
        "adding the vcap user",
        &["useradd", "--uid", "1000", "--user-group", "--create-home", "--shell", "/bin/bash"],
        "vcap",
    )?;
    for g in SSH_GROUPS {
        chroot(root, "adding the ssh groups", &["groupadd", "--force"], g)?;
    }
    let sudoers = root.join("etc/sudoers.d/bosh_sudoers");
    fs::write(&sudoers, SUDOERS).map_err(io("writing the sudoers rule", &sudoers))?;
    fs::set_permissions(&sudoers, fs::Permissions::from_mode(0o440))
        .map_err(io("writing the sudoers rule", &sudoers))?;
    let ssh = root.join("etc/ssh");
    if let Ok(rd) = fs::read_dir(&ssh) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                fs::remove_file(e.path()).map_err(io("removing shared host keys", &e.path()))?;
            }
        }
    }
    let debs = root.join("var/cache/apt/archives");
    if let Ok(rd) = fs::read_dir(&debs) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                fs::remove_file(e.path()).map_err(io("removing downloaded packages", &e.path()))?;
            }
        }
    }
    Ok(())
}

/// Runs `args... last` inside `root` with chroot(8).
fn chroot(root: &Path, step: &'static str, args: &[&str], last: &str) -> Result<(), RootfsError> {
    let mut cmd = Command::new("chroot");
    cmd.arg(root).args(args).arg(last);
    let command = format!("chroot {} {} {last}", root.display(), args.join(" "));
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(RootfsError::Chroot {
            step,
            command,
            status: format!("exited with {}", o.status),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            ),
        }),
        Err(e) => Err(RootfsError::Chroot {
            step,
            command,
            status: "could not start".into(),
            output: e.to_string(),
        }),
    }
}

/// Records what the entry was built from, for a person looking at the cache.
fn write_inputs(inputs: &RootfsInputs, entry: &Path) -> Result<(), RootfsError> {
    let p = entry.join("inputs.txt");
    let text = format!(
        "suite: {}\nmirror: {}\npackages: {}\nlayout: {LAYOUT_VERSION}\n",
        inputs.suite,
        inputs.mirror,
        inputs.packages.join(","),
    );
    fs::File::create(&p)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io("recording the inputs", &p))
}

/// The packed image of a cached rootfs with `agent` at [`AGENT_PATH`],
/// `<cache>/<key>/image-<agent sha256 prefix>.tgz`, packed (into a temp
/// file, then renamed) when absent: packing a few hundred MB takes seconds,
/// which a cache hit should not pay either.
pub fn cached_image(rootfs: &Rootfs, agent: &Path) -> Result<PathBuf, RootfsError> {
    let entry = rootfs.path.parent().unwrap_or(Path::new("."));
    let dest = entry.join(format!("image-{}.tgz", &rootfs.agent_sha256[..16]));
    if dest.is_file() {
        return Ok(dest);
    }
    let lock_path = dest.with_extension("lock");
    let lock = fs::File::create(&lock_path).map_err(io("locking the image", &lock_path))?;
    lock.lock().map_err(io("locking the image", &lock_path))?;
    if dest.is_file() {
        return Ok(dest);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".image-")
        .tempfile_in(entry)
        .map_err(io("packing the image", entry))?;
    pack_image(&rootfs.path, agent, tmp.path())?;
    // A temp file is 0600; the image is no secret.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
        .map_err(io("packing the image", tmp.path()))?;
    tmp.persist(&dest).map_err(|e| io("packing the image", &dest)(e.error))?;
    prune_images(entry, KEEP_IMAGES, PRUNE_AFTER);
    Ok(dest)
}

/// Packed images kept per rootfs: one is made per agent build, so a
/// developer's cache would otherwise grow by the image's size (about
/// 120 MB) with every rebuilt agent.
const KEEP_IMAGES: usize = 4;
/// A packed image younger than this is never pruned: another process may
/// just have been handed its path.
const PRUNE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the packed images in `entry` beyond the `keep` newest that are
/// older than `after` (with their lock files). Best effort: a failure
/// leaves a file for the next time.
fn prune_images(entry: &Path, keep: usize, after: std::time::Duration) {
    let Ok(rd) = fs::read_dir(entry) else { return };
    let mut images: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("image-") && name.ends_with(".tgz")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    images.sort_by_key(|b| std::cmp::Reverse(b.0));
    let now = std::time::SystemTime::now();
    for (modified, path) in images.into_iter().skip(keep) {
        if now.duration_since(modified).is_ok_and(|age| age >= after) {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(path.with_extension("lock"));
        }
    }
}

/// Packs `rootfs` plus `agent` (at [`AGENT_PATH`], root-owned, 0755) as a
/// stemcell `image`: a gzipped tar of its contents that keeps owners, modes
/// (setuid included), symlinks and device nodes, since the image is an
/// operating system and not release content.
pub fn pack_image(rootfs: &Path, agent: &Path, dest: &Path) -> Result<(), RootfsError> {
    let step = "packing the image";
    let f = fs::File::create(dest).map_err(io(step, dest))?;
    let gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", rootfs).map_err(io(step, rootfs))?;
    let mut body = fs::File::open(agent).map_err(io(step, agent))?;
    let len = body.metadata().map_err(io(step, agent))?.len();
    let mut header = tar::Header::new_gnu();
    header.set_size(len);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, AGENT_PATH, &mut body).map_err(io(step, agent))?;
    let gz = tar.into_inner().map_err(io(step, dest))?;
    let mut w = gz.finish().map_err(io(step, dest))?;
    w.flush().map_err(io(step, dest))
}

/// Writes the rootfs stemcell tarball for `agent` at `out`: builds (or takes
/// from `cache`) the base rootfs, packs (or takes) its image with the agent,
/// and wraps it in BOSH's stemcell format. Returns the manifest written and
/// the rootfs (whose `cached` says whether debootstrap ran). The same call
/// serves `boshctl build-local-stemcell --rootfs`, `boshctl up` and the tests.
pub fn write_stemcell(
    agent: &Path,
    cache: &Path,
    out: &Path,
    id: &Identity,
    progress: impl FnMut(&str),
) -> Result<(crate::release::stemcell::StemcellManifest, Rootfs), StemcellError> {
    let inputs = RootfsInputs::for_agent(agent)?;
    let fs = build(&inputs, cache, progress)?;
    let image = cached_image(&fs, agent)?;
    let manifest = crate::release::stemcell::StemcellManifest {
        name: id.name.clone(),
        version: id.version.clone(),
        operating_system: id.os.clone(),
        bosh_protocol: "1".into(),
        api_version: Some(3),
        stemcell_formats: vec![FORMAT.into()],
        cloud_properties: [
            ("rootfs_key".to_string(), serde_json::Value::from(fs.key.clone())),
            ("agent_sha256".to_string(), serde_json::Value::from(fs.agent_sha256.clone())),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let m = crate::release::stemcell::write_stemcell(out, &manifest, &image, None)?;
    Ok((m, fs))
}

/// A stemcell's name, version and operating system.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Default [`STEMCELL_NAME`].
    pub name: String,
    /// Default `1`.
    pub version: String,
    /// Default [`OPERATING_SYSTEM`].
    pub os: String,
}

impl Default for Identity {
    fn default() -> Identity {
        Identity { name: STEMCELL_NAME.into(), version: "1".into(), os: OPERATING_SYSTEM.into() }
    }
}

/// Why [`write_stemcell`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StemcellError {
    /// Building the rootfs or its image failed.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// Writing the tarball failed.
    #[error(transparent)]
    Tarball(#[from] crate::release::Error),
}

/// `$XDG_CACHE_HOME/bosh-rs/stemcells`, else `~/.cache/bosh-rs/stemcells`:
/// where rootfs builds are cached per machine.
pub fn default_cache() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(base.join("bosh-rs/stemcells"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only packed images beyond the newest `keep` and older than `after`
    /// go; the rootfs and other files stay.
    #[test]
    fn old_packed_images_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for i in 0..6 {
            let p = dir.path().join(format!("image-{i}.tgz"));
            fs::write(&p, b"x").unwrap();
            fs::write(p.with_extension("lock"), b"").unwrap();
            // image-0 is the oldest, image-5 the newest; image-5 is fresh.
            if i < 5 {
                let f = fs::File::options().write(true).open(&p).unwrap();
                f.set_modified(old + std::time::Duration::from_secs(i)).unwrap();
            }
        }
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        fs::write(dir.path().join("inputs.txt"), b"").unwrap();
        prune_images(dir.path(), 2, PRUNE_AFTER);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["image-4.lock", "image-4.tgz", "image-5.lock", "image-5.tgz", "inputs.txt", "rootfs"]
        );
        // A young image beyond `keep` stays.
        prune_images(dir.path(), 0, std::time::Duration::from_secs(7200));
        assert!(
            dir.path().join("image-5.tgz").is_file() && dir.path().join("image-4.tgz").is_file()
        );
    }

    /// The key changes with every input but not with package order.
    #[test]
    fn cache_key_follows_the_inputs() {
        let pkgs = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let k = cache_key("bookworm", "http://m/debian", &pkgs(&["a", "b"]));
        assert_eq!(k, cache_key("bookworm", "http://m/debian", &pkgs(&["b", "a"])));
        assert_ne!(k, cache_key("bookworm", "http://m/debian", &pkgs(&["a", "c"])));
        assert_ne!(k, cache_key("bookworm", "http://n/debian", &pkgs(&["a", "b"])));
        assert_ne!(k, cache_key("trixie", "http://m/debian", &pkgs(&["a", "b"])));
        assert!(k.starts_with("bookworm-"), "{k}");
    }

    /// One-line sources: options are skipped and only the exact suite matches.
    #[test]
    fn mirror_from_one_line_sources() {
        let t = "# comment\ndeb https://x/apt cloud-sdk-bookworm main\n\
                 deb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main\n";
        assert_eq!(mirror_from_list(t, "bookworm").as_deref(), Some("http://m/debian"));
        assert_eq!(mirror_from_list(t, "trixie"), None);
    }

    /// deb822 sources: the stanza whose Suites has the exact suite wins over
    /// `bookworm-security` and over non-Debian sources.
    #[test]
    fn mirror_from_deb822_sources() {
        let t = "Types: deb\nURIs: http://sec/debian-security\nSuites: bookworm-security\n\n\
                 Types: deb\n# a comment\nURIs: http://m/debian\nSuites: bookworm bookworm-updates\n\
                 Components: main\n\nTypes: deb-src\nURIs: http://src/debian\nSuites: bookworm\n";
        assert_eq!(mirror_from_deb822(t, "bookworm").as_deref(), Some("http://m/debian"));
        assert_eq!(
            mirror_from_deb822("Types: deb-src\nURIs: http://s\nSuites: bookworm\n", "bookworm"),
            None
        );
    }
}
