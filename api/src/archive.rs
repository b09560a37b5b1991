//! Safe tarball unpacking and deterministic tarball writing.
//!
//! Every archive bosh-rs opens came from somewhere it does not control: a
//! release tarball a user uploads, a job or package inside it, a compiled
//! package or log bundle an agent sends back. So unpacking assumes hostility:
//!
//! - entries are refused for absolute paths, `..`, symlinks whose target
//!   leaves the tree (absolute targets, or more `..` than the link is deep),
//!   paths that pass through a symlink, hard links, devices and FIFOs, and
//!   duplicate names;
//! - caps on entries, bytes per entry and total bytes are enforced by
//!   counting the bytes actually decompressed, not by trusting headers, so a
//!   gzip bomb stops at the cap; bytes spent on headers between entries
//!   (GNU long names, pax records, skipped data) have their own small cap;
//! - everything is unpacked into a fresh staging directory beside `dest` and
//!   renamed into place only when the whole archive passed, so a refusal
//!   halfway leaves nothing behind and nothing is ever written outside
//!   `dest`;
//! - modes keep their permission bits (exec bits included) but never
//!   setuid, setgid or sticky.
//!
//! Writing is deterministic, because BOSH names jobs, packages and compiled
//! packages by the digest of their tarballs: the same sources must give the
//! same bytes on every machine. [`TgzWriter`] sorts entries by path and
//! writes mtime 0, uid/gid 0, no user or group names, modes normalized to
//! 0644/0755 (exec bit kept), no pax records, and a gzip header with mtime
//! 0, no file name and a fixed compression level.

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::read::GzDecoder;
use tar::EntryType;

/// Caps that stop hostile or broken archives; [`Limits::default`] suits
/// stemcells and the largest release tarballs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes all entries together may unpack to.
    pub max_total_bytes: u64,
    /// Most bytes a single entry may unpack to.
    pub max_entry_bytes: u64,
    /// Most entries (files, directories and links).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_total_bytes: 8 << 30, max_entry_bytes: 8 << 30, max_entries: 100_000 }
    }
}

/// Most bytes the tar reader may consume between two entries' data: their
/// headers, GNU long names, pax records and the padding or data it skips.
/// Real archives need a few KiB; a bomb hidden in a long-name record (which
/// the `tar` crate reads into memory) stops here.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `..` in the path.
    #[error("path escapes the target directory")]
    PathEscapes,
    /// A path starting with `/`.
    #[error("absolute path")]
    AbsolutePath,
    /// A path that is not UTF-8 or is otherwise unusable.
    #[error("invalid path")]
    InvalidPath,
    /// A symlink whose target is absolute or climbs out of the tree.
    #[error("symlink target {target:?} escapes the target directory")]
    SymlinkEscapes {
        /// The link's target as written in the archive.
        target: String,
    },
    /// An entry whose parent directory is a symlink from the same archive
    /// (writing through it could land anywhere).
    #[error("path passes through a symlink")]
    ThroughSymlink,
    /// A hard link; never needed by BOSH archives and an easy way out.
    #[error("hard links are not allowed")]
    HardLink,
    /// A device, FIFO or other special file.
    #[error("special files ({kind}) are not allowed")]
    SpecialFile {
        /// The entry type.
        kind: String,
    },
    /// A name that appeared before (or collides with an implied directory).
    #[error("duplicate entry")]
    Duplicate,
    /// Over [`Limits::max_entry_bytes`].
    #[error("entry is larger than the limit of {limit} bytes")]
    EntryTooLarge {
        /// The limit.
        limit: u64,
    },
    /// Over [`Limits::max_total_bytes`].
    #[error("archive unpacks to more than the limit of {limit} bytes")]
    TotalTooLarge {
        /// The limit.
        limit: u64,
    },
    /// Over [`Limits::max_entries`].
    #[error("archive has more than the limit of {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// Over [`MAX_HEADER_BYTES`] of headers and metadata before an entry.
    #[error("entry headers are larger than the limit of {limit} bytes")]
    HeaderTooLarge {
        /// The limit.
        limit: u64,
    },
}

/// An archive could not be unpacked or written. Each variant names the
/// archive (as the caller described it, e.g. `job web.tgz`) and, where one
/// is known, the entry.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An entry was refused; nothing was written to the destination.
    #[error("{archive}: {}{reason}", entry_prefix(entry))]
    Refused {
        /// What the archive is.
        archive: String,
        /// The entry's name as written in the archive, when known.
        entry: Option<String>,
        /// Why.
        reason: Refusal,
    },
    /// The archive is not a readable gzip/tar stream (truncated, corrupt).
    #[error("{archive}: {}unreadable archive", entry_prefix(entry))]
    Read {
        /// What the archive is.
        archive: String,
        /// The entry being read, when known.
        entry: Option<String>,
        /// What the reader reported.
        #[source]
        source: io::Error,
    },
    /// A local file or directory could not be read or written.
    #[error("{archive}: I/O error on {path}")]
    Io {
        /// What the archive is.
        archive: String,
        /// The local path involved.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: io::Error,
    },
}

fn entry_prefix(entry: &Option<String>) -> String {
    entry.as_ref().map(|e| format!("entry {e:?}: ")).unwrap_or_default()
}

impl ArchiveError {
    /// The refusal reason, if this is a refusal.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            ArchiveError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Unpacking
// ---------------------------------------------------------------------------

/// Unpacks a gzipped tarball into `dest`, which must not exist or be an
/// empty directory. `name` describes the archive in errors (`job web.tgz`).
/// Returns the unpacked entries' paths relative to `dest`, in archive order.
pub fn unpack_tgz(
    reader: impl Read,
    dest: &Path,
    limits: &Limits,
    name: &str,
) -> Result<Vec<PathBuf>, ArchiveError> {
    unpack_tar(GzDecoder::new(BufReader::new(reader)), dest, limits, name)
}

/// [`unpack_tgz`] for a tarball on disk.
pub fn unpack_tgz_file(
    path: &Path,
    dest: &Path,
    limits: &Limits,
    name: &str,
) -> Result<Vec<PathBuf>, ArchiveError> {
    let f = File::open(path).map_err(|source| io_error(name, path, source))?;
    unpack_tgz(f, dest, limits, name)
}

/// [`unpack_tgz`] for an uncompressed tarball.
pub fn unpack_tar(
    reader: impl Read,
    dest: &Path,
    limits: &Limits,
    name: &str,
) -> Result<Vec<PathBuf>, ArchiveError> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let staging = Staging::create(&parent, name)?;
    let unpacked = Unpacker::new(name, &staging.path, limits).run(reader)?;
    fs::set_permissions(&staging.path, fs::Permissions::from_mode(0o755))
        .map_err(|source| io_error(name, &staging.path, source))?;
    // Atomic; replaces an empty directory, fails on a non-empty one.
    fs::rename(&staging.path, dest).map_err(|source| io_error(name, dest, source))?;
    staging.disarm();
    Ok(unpacked)
}

/// Reads one member's content without unpacking anything (e.g. `release.MF`
/// out of a release tarball). `member` is compared after normalization, so
/// `./release.MF` and `release.MF` are the same. Returns `None` when the
/// archive has no such regular file; refuses a member over `max` bytes.
pub fn read_tgz_member(
    reader: impl Read,
    member: &str,
    max: u64,
    name: &str,
) -> Result<Option<Vec<u8>>, ArchiveError> {
    let want = normalize_entry_path(member).map_err(|reason| refused(name, member, reason))?;
    let limits = Limits { max_total_bytes: u64::MAX, max_entry_bytes: max, max_entries: u64::MAX };
    let counter = Rc::new(Counter::new(&limits));
    let mut archive = tar::Archive::new(Counting {
        inner: GzDecoder::new(BufReader::new(reader)),
        c: counter.clone(),
    });
    let entries = archive.entries().map_err(|source| read_error(name, None, source))?;
    let mut last: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|source| counter.error(name, last.as_deref(), source))?;
        counter.start_entry();
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let is_file =
            matches!(entry.header().entry_type(), EntryType::Regular | EntryType::Continuous);
        if is_file && normalize_entry_path(&raw).ok().as_ref() == Some(&want) {
            if entry.size() > max {
                return Err(refused(name, &raw, Refusal::EntryTooLarge { limit: max }));
            }
            let mut buf = Vec::new();
            counter.in_data.set(true);
            (&mut entry)
                .take(max + 1)
                .read_to_end(&mut buf)
                .map_err(|source| counter.error(name, Some(&raw), source))?;
            if buf.len() as u64 > max {
                return Err(refused(name, &raw, Refusal::EntryTooLarge { limit: max }));
            }
            return Ok(Some(buf));
        }
        last = Some(raw);
    }
    Ok(None)
}

/// A staging directory beside the destination, removed unless disarmed.
struct Staging {
    path: PathBuf,
    armed: bool,
}

impl Staging {
    fn create(parent: &Path, name: &str) -> Result<Staging, ArchiveError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(parent).map_err(|source| io_error(name, parent, source))?;
        loop {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!(".unpack-{}-{nanos}-{seq}", std::process::id()));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Staging { path, armed: true }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(io_error(name, &path, source)),
            }
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            // Directories may have been left without write permission by
            // the archive's modes; give them back before removing.
            make_writable(&self.path);
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn make_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}

/// Byte accounting shared between the unpacker and the reader it wraps.
struct Counter {
    /// Decompressed bytes consumed so far.
    total: Cell<u64>,
    /// Bytes consumed since the current entry's data ended.
    since_data: Cell<u64>,
    /// Whether the unpacker is copying an entry's data right now.
    in_data: Cell<bool>,
    /// Which cap tripped, if one did.
    tripped: Cell<Option<Refusal>>,
    total_cap: u64,
    total_limit: u64,
}

impl Counter {
    fn new(limits: &Limits) -> Counter {
        // Headers and padding add up to 1 KiB per entry on top of the data.
        let overhead = limits.max_entries.saturating_mul(1024).saturating_add(MAX_HEADER_BYTES);
        Counter {
            total: Cell::new(0),
            since_data: Cell::new(0),
            in_data: Cell::new(false),
            tripped: Cell::new(None),
            total_cap: limits.max_total_bytes.saturating_add(overhead),
            total_limit: limits.max_total_bytes,
        }
    }

    fn start_entry(&self) {
        self.since_data.set(0);
    }

    fn end_data(&self) {
        self.in_data.set(false);
        self.since_data.set(0);
    }

    /// Accounts for `n` bytes read; `Err` once a cap is exceeded.
    fn account(&self, n: usize) -> io::Result<()> {
        let n = n as u64;
        self.total.set(self.total.get().saturating_add(n));
        if self.total.get() > self.total_cap {
            return Err(self.trip(Refusal::TotalTooLarge { limit: self.total_limit }));
        }
        if !self.in_data.get() {
            self.since_data.set(self.since_data.get() + n);
            if self.since_data.get() > MAX_HEADER_BYTES {
                return Err(self.trip(Refusal::HeaderTooLarge { limit: MAX_HEADER_BYTES }));
            }
        }
        Ok(())
    }

    fn trip(&self, reason: Refusal) -> io::Error {
        let msg = reason.to_string();
        self.tripped.set(Some(reason));
        io::Error::other(msg)
    }

    /// Turns a read error into a refusal when it was a cap tripping.
    fn error(&self, archive: &str, entry: Option<&str>, source: io::Error) -> ArchiveError {
        match self.tripped.take() {
            Some(reason) => ArchiveError::Refused {
                archive: archive.to_owned(),
                entry: entry.map(str::to_owned),
                reason,
            },
            None => read_error(archive, entry, source),
        }
    }
}

/// Counts every decompressed byte the tar reader consumes.
struct Counting<R> {
    inner: R,
    c: Rc<Counter>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.c.tripped_already() {
            return Err(io::Error::other("archive limit exceeded"));
        }
        let n = self.inner.read(buf)?;
        self.c.account(n)?;
        Ok(n)
    }
}

impl Counter {
    fn tripped_already(&self) -> bool {
        let t = self.tripped.take();
        let tripped = t.is_some();
        self.tripped.set(t);
        tripped
    }
}

struct Unpacker<'a> {
    name: &'a str,
    root: &'a Path,
    limits: &'a Limits,
    counter: Rc<Counter>,
    seen: HashSet<PathBuf>,
    /// Directories to chmod once everything is written (deepest first), so a
    /// read-only directory does not stop its own contents being created.
    dir_modes: Vec<(PathBuf, u32)>,
    unpacked: Vec<PathBuf>,
    entry_bytes_total: u64,
}

impl<'a> Unpacker<'a> {
    fn new(name: &'a str, root: &'a Path, limits: &'a Limits) -> Self {
        Unpacker {
            name,
            root,
            limits,
            counter: Rc::new(Counter::new(limits)),
            seen: HashSet::new(),
            dir_modes: Vec::new(),
            unpacked: Vec::new(),
            entry_bytes_total: 0,
        }
    }

    fn run(mut self, reader: impl Read) -> Result<Vec<PathBuf>, ArchiveError> {
        let counting = Counting { inner: reader, c: self.counter.clone() };
        let mut archive = tar::Archive::new(counting);
        let entries = archive.entries().map_err(|source| read_error(self.name, None, source))?;
        let mut count = 0u64;
        let mut last: Option<String> = None;
        for entry in entries {
            let entry = entry.map_err(|s| self.counter.error(self.name, last.as_deref(), s))?;
            self.counter.start_entry();
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if entry.header().entry_type() == EntryType::XGlobalHeader {
                // pax global headers (`git archive` writes one) carry only
                // metadata we do not use.
                continue;
            }
            count += 1;
            if count > self.limits.max_entries {
                let limit = self.limits.max_entries;
                return Err(refused(self.name, &raw, Refusal::TooManyEntries { limit }));
            }
            self.entry(entry, &raw)?;
            last = Some(raw);
        }
        self.dir_modes.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (path, mode) in &self.dir_modes {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(|source| io_error(self.name, path, source))?;
        }
        Ok(self.unpacked)
    }

    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        raw: &str,
    ) -> Result<(), ArchiveError> {
        let refuse = |reason| refused(self.name, raw, reason);
        let path_bytes = entry.path_bytes();
        let path_str =
            std::str::from_utf8(&path_bytes).map_err(|_| refuse(Refusal::InvalidPath))?;
        let rel = normalize_entry_path(path_str).map_err(refuse)?;
        drop(path_bytes);
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            // `./` itself: the staging root stands for it.
            if kind.is_dir() {
                return Ok(());
            }
            return Err(refuse(Refusal::InvalidPath));
        }
        match kind {
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink => {}
            EntryType::Link => return Err(refuse(Refusal::HardLink)),
            other => return Err(refuse(Refusal::SpecialFile { kind: format!("{other:?}") })),
        }
        if !self.seen.insert(rel.clone()) {
            return Err(refuse(Refusal::Duplicate));
        }
        let target = self.root.join(&rel);
        self.ensure_parents(&rel, raw)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match kind {
            EntryType::Directory => match fs::symlink_metadata(&target) {
                // Implied earlier by a file inside it: fine, just record the mode.
                Ok(m) if m.is_dir() => self.dir_modes.push((target, mode | 0o700)),
                Ok(_) => return Err(refuse(Refusal::Duplicate)),
                Err(_) => {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&target)
                        .map_err(|source| io_error(self.name, &target, source))?;
                    self.dir_modes.push((target, mode | 0o700));
                }
            },
            EntryType::Symlink => {
                let link = entry.link_name_bytes().ok_or_else(|| refuse(Refusal::InvalidPath))?;
                let link = std::str::from_utf8(&link).map_err(|_| refuse(Refusal::InvalidPath))?;
                check_symlink_target(&rel, link)
                    .map_err(|()| refuse(Refusal::SymlinkEscapes { target: link.to_owned() }))?;
                std::os::unix::fs::symlink(link, &target).map_err(|source| {
                    if source.kind() == io::ErrorKind::AlreadyExists {
                        refuse(Refusal::Duplicate)
                    } else {
                        io_error(self.name, &target, source)
                    }
                })?;
            }
            _ => self.file(&mut entry, raw, &target, mode)?,
        }
        self.unpacked.push(rel);
        Ok(())
    }

    /// Creates missing parent directories of `rel` inside the root, refusing
    /// to go through anything that is not a real directory.
    fn ensure_parents(&self, rel: &Path, raw: &str) -> Result<(), ArchiveError> {
        let mut dir = self.root.to_path_buf();
        let Some(parent) = rel.parent() else { return Ok(()) };
        for comp in parent.components() {
            dir.push(comp);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refused(self.name, raw, Refusal::ThroughSymlink));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(refused(self.name, raw, Refusal::Duplicate)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&dir)
                        .map_err(|source| io_error(self.name, &dir, source))?;
                }
                Err(source) => return Err(io_error(self.name, &dir, source)),
            }
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &str,
        target: &Path,
        mode: u32,
    ) -> Result<(), ArchiveError> {
        let limits = self.limits;
        let refuse = |reason| refused(self.name, raw, reason);
        // Cheap early refusals from the header; the byte counts below are
        // what actually enforces the caps.
        if entry.size() > limits.max_entry_bytes {
            return Err(refuse(Refusal::EntryTooLarge { limit: limits.max_entry_bytes }));
        }
        if self.entry_bytes_total.saturating_add(entry.size()) > limits.max_total_bytes {
            return Err(refuse(Refusal::TotalTooLarge { limit: limits.max_total_bytes }));
        }
        // create_new: never follows or replaces whatever is already there.
        let f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(target).map_err(
            |source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    refuse(Refusal::Duplicate)
                } else {
                    io_error(self.name, target, source)
                }
            },
        )?;
        let mut out = BufWriter::new(f);
        let mut buf = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        self.counter.in_data.set(true);
        loop {
            let n =
                entry.read(&mut buf).map_err(|s| self.counter.error(self.name, Some(raw), s))?;
            if n == 0 {
                break;
            }
            written += n as u64;
            self.entry_bytes_total += n as u64;
            if written > limits.max_entry_bytes {
                return Err(refuse(Refusal::EntryTooLarge { limit: limits.max_entry_bytes }));
            }
            if self.entry_bytes_total > limits.max_total_bytes {
                return Err(refuse(Refusal::TotalTooLarge { limit: limits.max_total_bytes }));
            }
            out.write_all(&buf[..n]).map_err(|source| io_error(self.name, target, source))?;
        }
        self.counter.end_data();
        let f = out.into_inner().map_err(|e| io_error(self.name, target, e.into_error()))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|source| io_error(self.name, target, source))?;
        Ok(())
    }
}

/// Normalizes an entry name to a relative path with only normal components
/// (`./a//b/` → `a/b`; `./` → empty), refusing absolute paths and `..`.
fn normalize_entry_path(raw: &str) -> Result<PathBuf, Refusal> {
    if raw.starts_with('/') {
        return Err(Refusal::AbsolutePath);
    }
    if raw.contains('\0') {
        return Err(Refusal::InvalidPath);
    }
    let mut out = PathBuf::new();
    for comp in Path::new(raw).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(Refusal::PathEscapes),
            Component::RootDir | Component::Prefix(_) => return Err(Refusal::AbsolutePath),
        }
    }
    Ok(out)
}

/// Accepts a symlink at `link` (relative to the root) pointing at `target`
/// only if the target is relative, has its `..` only at the start, and does
/// not climb above the root from the link's directory.
///
/// `..` after a name is refused even when it would cancel out lexically: if
/// the name were itself a symlink (`a -> .`), `a/..` would physically climb
/// one level higher than it reads. With leading `..` only, every `..` climbs
/// through real directories (entries are never created through symlinks),
/// and every later name descends, so each link lands inside the tree.
fn check_symlink_target(link: &Path, target: &str) -> Result<(), ()> {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return Err(());
    }
    let depth = link.parent().map_or(0, |p| p.components().count());
    let mut ups = 0usize;
    let mut seen_name = false;
    for comp in Path::new(target).components() {
        match comp {
            Component::ParentDir if seen_name => return Err(()),
            Component::ParentDir => ups += 1,
            Component::Normal(_) => seen_name = true,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(()),
        }
    }
    if ups > depth { Err(()) } else { Ok(()) }
}

fn refused(archive: &str, entry: &str, reason: Refusal) -> ArchiveError {
    ArchiveError::Refused { archive: archive.to_owned(), entry: Some(entry.to_owned()), reason }
}

fn read_error(archive: &str, entry: Option<&str>, source: io::Error) -> ArchiveError {
    ArchiveError::Read { archive: archive.to_owned(), entry: entry.map(str::to_owned), source }
}

fn io_error(archive: &str, path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Io { archive: archive.to_owned(), path: path.to_owned(), source }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// What an entry of a [`TgzWriter`] holds.
#[derive(Debug, Clone)]
enum Source {
    Dir,
    File(PathBuf),
    Bytes(Vec<u8>),
    Symlink(String),
}

/// Collects entries, then writes them as a deterministic `.tgz` (see the
/// module docs): the output depends only on names, contents, exec bits and
/// link targets.
#[derive(Debug, Clone, Default)]
pub struct TgzWriter {
    entries: Vec<(String, Source, bool)>,
}

impl TgzWriter {
    /// An empty archive.
    pub fn new() -> TgzWriter {
        TgzWriter::default()
    }

    /// Adds a directory (mode 0755).
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entries.push((clean_name(name), Source::Dir, true));
        self
    }

    /// Adds the file at `src` under `name`, executable (0755) when `src` has
    /// its owner exec bit set, 0644 otherwise. Content is read at write time.
    pub fn file(&mut self, name: &str, src: &Path) -> Result<&mut Self, ArchiveError> {
        let meta = fs::metadata(src).map_err(|source| io_error(name, src, source))?;
        let exec = meta.permissions().mode() & 0o100 != 0;
        self.entries.push((clean_name(name), Source::File(src.to_owned()), exec));
        Ok(self)
    }

    /// Adds a file with the given content.
    pub fn bytes(&mut self, name: &str, data: impl Into<Vec<u8>>, executable: bool) -> &mut Self {
        self.entries.push((clean_name(name), Source::Bytes(data.into()), executable));
        self
    }

    /// Adds a symbolic link to `target` (written as given).
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entries.push((clean_name(name), Source::Symlink(target.to_owned()), false));
        self
    }

    /// Writes the archive to `out` and returns it. `archive` names the
    /// archive in errors. Duplicate names are refused.
    pub fn write<W: Write>(mut self, out: W, archive: &str) -> Result<W, ArchiveError> {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        for pair in self.entries.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(refused(archive, &pair[0].0, Refusal::Duplicate));
            }
        }
        let werr = |source| io_error(archive, Path::new(archive), source);
        let gz =
            flate2::GzBuilder::new().mtime(0).operating_system(255).write(out, Compression::new(6));
        let mut tar = tar::Builder::new(gz);
        tar.mode(tar::HeaderMode::Deterministic);
        for (name, source, exec) in self.entries {
            if let Err(reason) = normalize_entry_path(&name) {
                return Err(refused(archive, &name, reason));
            }
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mode(if exec { 0o755 } else { 0o644 });
            match source {
                Source::Dir => {
                    h.set_entry_type(EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    tar.append_data(&mut h, format!("{name}/"), io::empty()).map_err(werr)?;
                }
                Source::Bytes(data) => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_size(data.len() as u64);
                    tar.append_data(&mut h, &name, data.as_slice()).map_err(werr)?;
                }
                Source::File(src) => {
                    let ferr = |source| io_error(archive, &src, source);
                    let f = File::open(&src).map_err(ferr)?;
                    let len = f.metadata().map_err(ferr)?.len();
                    h.set_entry_type(EntryType::Regular);
                    h.set_size(len);
                    let mut exact = ExactLen { inner: f.take(len), left: len };
                    tar.append_data(&mut h, &name, &mut exact).map_err(werr)?;
                    if exact.left != 0 {
                        let source = io::Error::other("file shrank while being archived");
                        return Err(io_error(archive, &src, source));
                    }
                }
                Source::Symlink(target) => {
                    h.set_entry_type(EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    tar.append_link(&mut h, &name, &target).map_err(werr)?;
                }
            }
        }
        let gz = tar.into_inner().map_err(werr)?;
        gz.finish().map_err(werr)
    }

    /// Writes the archive to the file `dest`, atomically: into a temp file
    /// beside it, renamed over `dest` when complete.
    pub fn write_to_path(self, dest: &Path) -> Result<(), ArchiveError> {
        let archive = dest.display().to_string();
        let tmp = temp_beside(dest);
        let result = (|| {
            let f = File::create(&tmp).map_err(|source| io_error(&archive, &tmp, source))?;
            let w = self.write(BufWriter::new(f), &archive)?;
            let f = w.into_inner().map_err(|e| io_error(&archive, &tmp, e.into_error()))?;
            f.sync_all().map_err(|source| io_error(&archive, &tmp, source))?;
            fs::rename(&tmp, dest).map_err(|source| io_error(&archive, dest, source))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Adds everything under `dir` (directories, files, symlinks), named
    /// relative to `dir`. Special files are refused.
    pub fn add_dir_contents(&mut self, dir: &Path) -> Result<&mut Self, ArchiveError> {
        let archive = dir.display().to_string();
        let mut stack = vec![(dir.to_path_buf(), String::new())];
        while let Some((path, prefix)) = stack.pop() {
            let rd = fs::read_dir(&path).map_err(|source| io_error(&archive, &path, source))?;
            for e in rd {
                let e = e.map_err(|source| io_error(&archive, &path, source))?;
                let p = e.path();
                let fname = e.file_name();
                let Some(fname) = fname.to_str() else {
                    return Err(refused(&archive, &p.display().to_string(), Refusal::InvalidPath));
                };
                let name = format!("{prefix}{fname}");
                let ft = e.file_type().map_err(|source| io_error(&archive, &p, source))?;
                if ft.is_symlink() {
                    let t = fs::read_link(&p).map_err(|source| io_error(&archive, &p, source))?;
                    let Some(t) = t.to_str() else {
                        return Err(refused(&archive, &name, Refusal::InvalidPath));
                    };
                    self.symlink(&name, t);
                } else if ft.is_dir() {
                    self.dir(&name);
                    stack.push((p, format!("{name}/")));
                } else if ft.is_file() {
                    self.file(&name, &p)?;
                } else {
                    let kind = format!("{ft:?}");
                    return Err(refused(&archive, &name, Refusal::SpecialFile { kind }));
                }
            }
        }
        Ok(self)
    }
}

/// Writes everything under `dir` as a deterministic `.tgz` to `out`.
pub fn write_tgz_from_dir<W: Write>(dir: &Path, out: W) -> Result<W, ArchiveError> {
    let mut w = TgzWriter::new();
    w.add_dir_contents(dir)?;
    w.write(out, &dir.display().to_string())
}

fn clean_name(name: &str) -> String {
    name.trim_start_matches("./").trim_end_matches('/').to_owned()
}

fn temp_beside(dest: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!(".{name}.part-{}-{seq}", std::process::id()))
}

/// Reads at most the length declared in the header, and records how much
/// was missing so a file that shrank mid-write is an error, not a corrupt
/// archive.
struct ExactLen<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactLen<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
