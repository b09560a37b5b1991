//! Tests for [`super`]: determinism of the writer, and hostile tarballs
//! built byte by byte with the `tar` crate's raw header API.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};

use super::*;

const NAME: &str = "job web.tgz";

/// A tar builder whose headers we fill by hand, bypassing `set_path`'s checks.
struct Raw(tar::Builder<GzEncoder<Vec<u8>>>);

impl Raw {
    fn new() -> Raw {
        Raw(tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast())))
    }

    fn header(name: &str, kind: EntryType, link: &str, size: u64, mode: u32) -> Header {
        let mut h = Header::new_gnu();
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_cksum();
        h
    }

    fn file(mut self, name: &str, data: &[u8]) -> Raw {
        let h = Raw::header(name, EntryType::Regular, "", data.len() as u64, 0o644);
        self.0.append(&h, data).unwrap();
        self
    }

    fn stream(mut self, name: &str, size: u64, data: impl Read) -> Raw {
        let h = Raw::header(name, EntryType::Regular, "", size, 0o644);
        self.0.append(&h, data).unwrap();
        self
    }

    fn entry(mut self, name: &str, kind: EntryType, link: &str, mode: u32) -> Raw {
        let h = Raw::header(name, kind, link, 0, mode);
        self.0.append(&h, io::empty()).unwrap();
        self
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap().finish().unwrap()
    }
}

/// Every path under `root`, with file contents, for before/after comparison.
fn snapshot(root: &Path) -> BTreeSet<(PathBuf, Vec<u8>)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() { fs::read(&p).unwrap() } else { Vec::new() };
            out.insert((p.strip_prefix(root).unwrap().to_owned(), content));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// Unpacks `tgz` two levels below a temp root, expects a refusal, and checks
/// that nothing at all changed under the root (no dest, no staging dir).
fn refuse(tgz: &[u8], limits: &Limits) -> ArchiveError {
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("a/b");
    fs::create_dir_all(&parent).unwrap();
    fs::write(root.path().join("a/sentinel"), b"keep").unwrap();
    let before = snapshot(root.path());
    let err = unpack_tgz(tgz, &parent.join("out"), limits, NAME).unwrap_err();
    assert_eq!(snapshot(root.path()), before, "unpacking changed the filesystem: {err}");
    err
}

fn unpack_ok(tgz: &[u8]) -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("out");
    let paths = unpack_tgz(tgz, &dest, &Limits::default(), NAME).unwrap();
    (root, dest, paths)
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn sample_dir(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("templates/empty")).unwrap();
    fs::write(root.join("spec"), b"name: web\n").unwrap();
    fs::write(root.join("bin/run"), b"#!/bin/sh\nexec web\n").unwrap();
    fs::set_permissions(root.join("bin/run"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(root.join("templates/web.yml.erb"), b"port: <%= p('port') %>\n").unwrap();
    fs::set_permissions(root.join("templates/web.yml.erb"), fs::Permissions::from_mode(0o600))
        .unwrap();
    std::os::unix::fs::symlink("bin/run", root.join("start")).unwrap();
}

/// The same sources give byte-identical tarballs, even after their mtimes change.
#[test]
fn same_sources_give_byte_identical_tgz_even_after_touching_mtimes() {
    let dir = tempfile::tempdir().unwrap();
    sample_dir(dir.path());
    let first = write_tgz_from_dir(dir.path(), Vec::new()).unwrap();
    for f in ["spec", "bin/run", "templates/web.yml.erb"] {
        let file = fs::File::options().write(true).open(dir.path().join(f)).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(86_400 * 400)).unwrap();
    }
    let second = write_tgz_from_dir(dir.path(), Vec::new()).unwrap();
    assert_eq!(first, second);

    // The same tree built elsewhere, in another creation order, matches too.
    let other = tempfile::tempdir().unwrap();
    fs::create_dir_all(other.path().join("templates/empty")).unwrap();
    fs::write(other.path().join("templates/web.yml.erb"), b"port: <%= p('port') %>\n").unwrap();
    std::os::unix::fs::symlink("bin/run", other.path().join("start")).unwrap();
    fs::create_dir_all(other.path().join("bin")).unwrap();
    fs::write(other.path().join("bin/run"), b"#!/bin/sh\nexec web\n").unwrap();
    fs::set_permissions(other.path().join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(other.path().join("spec"), b"name: web\n").unwrap();
    assert_eq!(write_tgz_from_dir(other.path(), Vec::new()).unwrap(), first);
}

/// Written headers are sorted, owned by 0, dated 0 and have normalized modes.
#[test]
fn writer_normalizes_order_owners_times_and_modes() {
    let dir = tempfile::tempdir().unwrap();
    sample_dir(dir.path());
    let tgz = write_tgz_from_dir(dir.path(), Vec::new()).unwrap();
    assert_eq!(&tgz[4..8], &[0, 0, 0, 0], "gzip mtime is 0");
    assert_eq!(tgz[3] & 0x08, 0, "gzip header carries no file name");
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(tgz.as_slice()));
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!((h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()), (0, 0, 0));
        assert_eq!(h.username_bytes().unwrap_or_default(), b"");
        assert_eq!(h.groupname_bytes().unwrap_or_default(), b"");
        let kind = h.entry_type();
        assert!(!kind.is_pax_local_extensions() && !kind.is_pax_global_extensions());
        seen.push((String::from_utf8(e.path_bytes().into_owned()).unwrap(), h.mode().unwrap()));
    }
    assert_eq!(
        seen,
        [
            ("bin/", 0o755),
            ("bin/run", 0o755),
            ("spec", 0o644),
            ("start", 0o777),
            ("templates/", 0o755),
            ("templates/empty/", 0o755),
            ("templates/web.yml.erb", 0o644),
        ]
        .map(|(p, m)| (p.to_owned(), m))
    );
}

/// What the writer writes, the unpacker restores: content, exec bits, links.
#[test]
fn written_tgz_unpacks_to_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    sample_dir(dir.path());
    let mut w = TgzWriter::new();
    w.add_dir_contents(dir.path()).unwrap().bytes("extra/notes.txt", "hi", false);
    let tgz = w.write(Vec::new(), NAME).unwrap();
    let (_root, dest, paths) = unpack_ok(&tgz);
    assert_eq!(paths.len(), 8, "{paths:?}");
    assert_eq!(fs::read(dest.join("bin/run")).unwrap(), b"#!/bin/sh\nexec web\n");
    assert_eq!(mode(&dest.join("bin/run")), 0o755);
    assert_eq!(mode(&dest.join("spec")), 0o644);
    assert_eq!(fs::read_link(dest.join("start")).unwrap(), Path::new("bin/run"));
    assert_eq!(fs::read(dest.join("start")).unwrap(), b"#!/bin/sh\nexec web\n");
    assert!(dest.join("templates/empty").is_dir());
    assert_eq!(fs::read(dest.join("extra/notes.txt")).unwrap(), b"hi");
}

/// write_to_path replaces the destination atomically and leaves no temp file.
#[test]
fn write_to_path_leaves_only_the_finished_archive() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("license.tgz");
    let mut w = TgzWriter::new();
    w.bytes("LICENSE", "Apache-2.0", false);
    w.clone().write_to_path(&dest).unwrap();
    w.write_to_path(&dest).unwrap();
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    let got = read_tgz_member(fs::File::open(&dest).unwrap(), "./LICENSE", 100, NAME).unwrap();
    assert_eq!(got.as_deref(), Some(&b"Apache-2.0"[..]));
}

/// Archives made by `tar -C dir .` (entries under `./`) unpack normally.
#[test]
fn dot_slash_prefixed_entries_unpack() {
    let tgz = Raw::new()
        .entry("./", EntryType::Directory, "", 0o755)
        .entry("./jobs/", EntryType::Directory, "", 0o755)
        .file("./jobs/web.tgz", b"x")
        .file("./release.MF", b"name: r\n")
        .finish();
    let (_root, dest, paths) = unpack_ok(&tgz);
    let want: Vec<PathBuf> = ["jobs", "jobs/web.tgz", "release.MF"].map(PathBuf::from).into();
    assert_eq!(paths, want);
    assert_eq!(fs::read(dest.join("release.MF")).unwrap(), b"name: r\n");
    let member = read_tgz_member(tgz.as_slice(), "release.MF", 1024, NAME).unwrap();
    assert_eq!(member.as_deref(), Some(&b"name: r\n"[..]));
    assert_eq!(read_tgz_member(tgz.as_slice(), "nope", 1024, NAME).unwrap(), None);
}

/// setuid, setgid and sticky bits are stripped; exec bits are kept.
#[test]
fn setuid_and_setgid_bits_are_stripped_and_exec_bits_kept() {
    let mut raw = Raw::new();
    let h = Raw::header("suid", EntryType::Regular, "", 2, 0o6755);
    raw.0.append(&h, &b"#!"[..]).unwrap();
    let h = Raw::header("dir/", EntryType::Directory, "", 0, 0o3775);
    raw.0.append(&h, io::empty()).unwrap();
    let (_root, dest, _) = unpack_ok(&raw.finish());
    assert_eq!(mode(&dest.join("suid")), 0o755);
    assert_eq!(mode(&dest.join("dir")), 0o775);
}

/// `..` in an entry name is refused, naming the archive and the entry.
#[test]
fn parent_dir_entry_is_refused_with_archive_and_entry_named() {
    let tgz = Raw::new().file("ok", b"fine").file("../../etc/passwd", b"root::0:0").finish();
    let err = refuse(&tgz, &Limits::default());
    assert_eq!(
        err.to_string(),
        r#"job web.tgz: entry "../../etc/passwd": path escapes the target directory"#
    );
    assert_eq!(err.refusal(), Some(&Refusal::PathEscapes));
}

/// An absolute entry name is refused.
#[test]
fn absolute_entry_is_refused() {
    let tgz = Raw::new().file("/tmp/owned", b"x").finish();
    assert_eq!(refuse(&tgz, &Limits::default()).refusal(), Some(&Refusal::AbsolutePath));
}

/// Symlinks whose targets leave the tree, relative or absolute, are refused.
#[test]
fn escaping_symlinks_are_refused() {
    for (link, target) in [("l", "../x"), ("a/b/l", "../../../x"), ("l", "/etc"), ("l", "a/../..")]
    {
        let tgz = Raw::new().entry(link, EntryType::Symlink, target, 0o777).finish();
        let err = refuse(&tgz, &Limits::default());
        assert_eq!(
            err.refusal(),
            Some(&Refusal::SymlinkEscapes { target: target.to_owned() }),
            "{link} -> {target}"
        );
    }
    // Climbing as far as the root, but no further, is fine.
    let tgz = Raw::new().entry("a/b/l", EntryType::Symlink, "../../c", 0o777).finish();
    unpack_ok(&tgz);
}

/// A symlink that reads as inside but climbs through another symlink is refused.
#[test]
fn dotdot_after_a_symlink_name_is_refused() {
    // `a -> .` is harmless; `b -> a/..` would resolve to the root's parent.
    let tgz = Raw::new()
        .entry("a", EntryType::Symlink, ".", 0o777)
        .entry("b", EntryType::Symlink, "a/..", 0o777)
        .finish();
    let err = refuse(&tgz, &Limits::default());
    assert!(matches!(err.refusal(), Some(Refusal::SymlinkEscapes { .. })), "{err}");
}

/// A file written through a symlink from the same archive is refused.
#[test]
fn file_through_symlink_is_refused() {
    let tgz = Raw::new()
        .entry("sub/", EntryType::Directory, "", 0o755)
        .entry("link", EntryType::Symlink, "sub", 0o777)
        .file("link/file", b"x")
        .finish();
    let err = refuse(&tgz, &Limits::default());
    assert_eq!(err.refusal(), Some(&Refusal::ThroughSymlink), "{err}");
    assert!(err.to_string().contains(r#"entry "link/file""#), "{err}");
}

/// Hard links are refused.
#[test]
fn hard_links_are_refused() {
    let tgz = Raw::new().file("a", b"x").entry("b", EntryType::Link, "a", 0o644).finish();
    assert_eq!(refuse(&tgz, &Limits::default()).refusal(), Some(&Refusal::HardLink));
}

/// Device files and FIFOs are refused.
#[test]
fn device_files_are_refused() {
    for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
        let tgz = Raw::new().entry("dev", kind, "", 0o644).finish();
        let err = refuse(&tgz, &Limits::default());
        assert!(matches!(err.refusal(), Some(Refusal::SpecialFile { .. })), "{err}");
    }
}

/// A name that appears twice is refused, however it is spelled.
#[test]
fn duplicate_entries_are_refused() {
    let tgz = Raw::new().file("spec", b"one").file("./spec", b"two").finish();
    assert_eq!(refuse(&tgz, &Limits::default()).refusal(), Some(&Refusal::Duplicate));
    // A symlink replacing an earlier file (the classic swap) too.
    let tgz = Raw::new().file("x", b"one").entry("x", EntryType::Symlink, "y", 0o777).finish();
    assert_eq!(refuse(&tgz, &Limits::default()).refusal(), Some(&Refusal::Duplicate));
}

/// 200 MB of zeros in one entry, compressed; shared by the bomb tests.
fn one_entry_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let size = 200 << 20;
        Raw::new().stream("zeros", size, io::repeat(0).take(size)).finish()
    })
}

const SMALL: Limits =
    Limits { max_total_bytes: 10 << 20, max_entry_bytes: 10 << 20, max_entries: 100 };

/// A gzip bomb is stopped at the cap with the entry named.
#[test]
fn gzip_bomb_is_stopped_at_the_cap() {
    let bomb = one_entry_bomb();
    assert!(bomb.len() < 1 << 20, "the bomb is small compressed: {}", bomb.len());
    let err = refuse(bomb, &SMALL);
    assert_eq!(err.refusal(), Some(&Refusal::EntryTooLarge { limit: 10 << 20 }));
    assert!(err.to_string().starts_with(r#"job web.tgz: entry "zeros": "#), "{err}");
}

/// Many entries each under the per-entry cap are stopped by the total, counted as read.
#[test]
fn many_small_entries_are_stopped_by_the_total_cap() {
    let mut raw = Raw::new();
    for i in 0..40 {
        raw = raw.stream(&format!("part{i}"), 1 << 20, io::repeat(0).take(1 << 20));
    }
    let err = refuse(&raw.finish(), &Limits { max_entry_bytes: 2 << 20, ..SMALL });
    assert_eq!(err.refusal(), Some(&Refusal::TotalTooLarge { limit: 10 << 20 }), "{err}");
    assert!(err.to_string().contains(r#"entry "part10""#), "{err}");
}

/// A huge GNU long-name record (read into memory by `tar`) is stopped early.
#[test]
fn oversized_long_name_record_is_stopped() {
    let mut raw = Raw::new();
    let size = 4 << 20;
    let h = Raw::header("././@LongLink", EntryType::GNULongName, "", size, 0o644);
    raw.0.append(&h, io::repeat(b'a').take(size)).unwrap();
    let raw = raw.file("x", b"x");
    let err = refuse(&raw.finish(), &Limits::default());
    assert_eq!(err.refusal(), Some(&Refusal::HeaderTooLarge { limit: MAX_HEADER_BYTES }), "{err}");
}

/// More entries than the cap are refused.
#[test]
fn too_many_entries_are_refused() {
    let mut raw = Raw::new();
    for i in 0..5 {
        raw = raw.file(&format!("f{i}"), b"x");
    }
    let err = refuse(&raw.finish(), &Limits { max_entries: 4, ..SMALL });
    assert_eq!(err.refusal(), Some(&Refusal::TooManyEntries { limit: 4 }));
    assert!(err.to_string().contains(r#"entry "f4""#), "{err}");
}

/// A truncated archive is a read error and leaves nothing behind.
#[test]
fn truncated_archive_is_a_read_error() {
    let tgz = Raw::new().file("a", &[7u8; 100_000]).finish();
    let err = refuse(&tgz[..tgz.len() / 2], &Limits::default());
    assert!(matches!(err, ArchiveError::Read { .. }), "{err}");
}

/// An existing empty destination directory is replaced; a non-empty one is not touched.
#[test]
fn destination_must_be_absent_or_empty() {
    let tgz = Raw::new().file("a", b"new").finish();
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("out");
    fs::create_dir(&dest).unwrap();
    unpack_tgz(tgz.as_slice(), &dest, &Limits::default(), NAME).unwrap();
    assert_eq!(fs::read(dest.join("a")).unwrap(), b"new");

    let err = unpack_tgz(tgz.as_slice(), &dest, &Limits::default(), NAME).unwrap_err();
    assert!(matches!(err, ArchiveError::Io { .. }), "{err}");
    assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1, "staging dir removed");
}

/// A read-only directory in the archive does not stop its own contents, nor cleanup.
#[test]
fn read_only_directories_unpack_and_clean_up() {
    let tgz = Raw::new()
        .entry("ro/", EntryType::Directory, "", 0o555)
        .file("ro/file", b"x")
        .file("../bad", b"x")
        .finish();
    refuse(&tgz, &Limits::default());
    let tgz = Raw::new().entry("ro/", EntryType::Directory, "", 0o555).file("ro/f", b"x").finish();
    let (_root, dest, _) = unpack_ok(&tgz);
    assert_eq!(fs::read(dest.join("ro/f")).unwrap(), b"x");
    fs::set_permissions(dest.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// The plain-tar variant applies the same checks.
#[test]
fn plain_tar_variant_refuses_the_same() {
    let mut b = tar::Builder::new(Vec::new());
    let h = Raw::header("../x", EntryType::Regular, "", 1, 0o644);
    b.append(&h, &b"x"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let root = tempfile::tempdir().unwrap();
    let err =
        unpack_tar(tar.as_slice(), &root.path().join("out"), &Limits::default(), NAME).unwrap_err();
    assert_eq!(err.refusal(), Some(&Refusal::PathEscapes));
    assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    let _ = io::stdout().flush();
}
