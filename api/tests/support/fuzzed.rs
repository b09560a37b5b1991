//! Mutated manifests for fault scenario F1 (docs/fault-matrix.md, "F. Bad
//! input"): valid example manifests, each changed in one place by a type
//! flip, a deleted key, inserted unicode, a 10 MB string or a YAML alias
//! bomb, and rendered back to YAML.
//!
//! Used by `api/tests/fuzzed_manifests.rs` (correctness, debug build) and by
//! `e2e/src/bin/bench-validate.rs` (timing and memory, release build), which
//! includes this file with `#[path]` so both run the same generator.

use std::path::Path;

use bosh_api::{
    manifest::{CloudConfig, Manifest, ValidationErrors, validate_against_cloud_config},
    yaml::{self, YamlError},
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use serde_json::{Value, json};

/// Size of the huge strings (F1: "10 MB strings").
pub const HUGE_STRING_BYTES: usize = 10 << 20;

/// What was done to a valid manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// A value replaced by one of another type (string ↔ number, list ↔ map, ...).
    TypeFlip,
    /// A map key removed.
    DeleteKey,
    /// Unicode (RTL override, zero-width space, emoji, CJK, combining marks,
    /// control characters) inserted into a string or a key.
    Unicode,
    /// A value replaced by a 10 MB string.
    HugeString,
    /// A value replaced by a billion-laughs alias bomb.
    AliasBomb,
}

impl Mutation {
    /// Every mutation, in the order reports list them.
    pub const ALL: [Mutation; 5] = [
        Mutation::TypeFlip,
        Mutation::DeleteKey,
        Mutation::Unicode,
        Mutation::HugeString,
        Mutation::AliasBomb,
    ];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::TypeFlip => "type flip",
            Mutation::DeleteKey => "missing key",
            Mutation::Unicode => "unicode",
            Mutation::HugeString => "10 MB string",
            Mutation::AliasBomb => "alias bomb",
        }
    }
}

/// A valid manifest and the cloud config it validates against.
#[derive(Clone)]
pub struct Base {
    /// The example's file name.
    pub name: String,
    /// The manifest, parsed.
    pub doc: Value,
    /// The manifest as YAML text (what the unmutated baseline validates).
    pub yaml: String,
    /// Its cloud config.
    pub cloud: CloudConfig,
}

/// One mutated manifest.
pub struct Case {
    /// Which base it came from (index into the bases).
    pub base: usize,
    /// What was done.
    pub mutation: Mutation,
    /// Where, in the validators' BOSH style (`instance_groups[0].jobs[1].name`).
    pub path: String,
    /// The YAML text to validate.
    pub yaml: String,
}

/// How validation ended.
pub enum Outcome {
    /// The mutation left a valid manifest (e.g. unicode in a free-form property).
    Valid,
    /// The YAML could not be read.
    Yaml(YamlError),
    /// The manifest, or what it takes from the cloud config, is invalid.
    Invalid(ValidationErrors),
}

/// Reads, validates and cross-checks a manifest, as the director does on a deploy.
pub fn validate(src: &str, cloud: &CloudConfig) -> Outcome {
    let v = match yaml::parse_value(src, "manifest.yml") {
        Ok(v) => v,
        Err(e) => return Outcome::Yaml(e),
    };
    let m = match Manifest::from_value(&v, "manifest.yml") {
        Ok(m) => m,
        Err(e) => return Outcome::Invalid(e),
    };
    match validate_against_cloud_config(&m, cloud, "manifest.yml") {
        Ok(()) => Outcome::Valid,
        Err(e) => Outcome::Invalid(e),
    }
}

/// Where a rejection points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// Not rejected: the mutation left a valid manifest.
    Valid,
    /// A YAML error with its line and column.
    Line,
    /// A validation error at the mutated path, one of its ancestors (a
    /// missing key is reported on its map) or below it.
    MutatedPath,
    /// Validation errors only at other paths, e.g. the references to a
    /// renamed stemcell alias (`instance_groups[0].stemcell`).
    OtherPath,
}

/// Checks that a rejection says where the problem is: a YAML error carries
/// a line, every validation error a path (the root map's, empty, only when
/// a top-level key was mutated). Returns the reason when it does not.
pub fn names_path(case: &Case, outcome: &Outcome) -> Result<Named, String> {
    match outcome {
        Outcome::Valid => Ok(Named::Valid),
        Outcome::Yaml(e) if e.line.is_some() => Ok(Named::Line),
        Outcome::Yaml(e) => Err(format!("YAML error without a position: {e}")),
        Outcome::Invalid(errs) => {
            // The root map's own errors (a top-level key missing or unknown)
            // have the empty path; anything deeper must have one.
            let top_level = !case.path.contains(['.', '[']);
            if let Some(e) = errs.errors.iter().find(|e| e.path.is_empty() && !top_level) {
                Err(format!("an error without a path: {}", e.message))
            } else if errs.errors.iter().any(|e| related(&e.path, &case.path)) {
                Ok(Named::MutatedPath)
            } else {
                Ok(Named::OtherPath)
            }
        }
    }
}

/// `q` is `p`, an ancestor of `p` or a descendant of `p` (BOSH-style paths).
fn related(q: &str, p: &str) -> bool {
    let below = |long: &str, short: &str| {
        long.strip_prefix(short).is_some_and(|rest| {
            rest.is_empty() || rest.starts_with('.') || rest.starts_with('[') || short.is_empty()
        })
    };
    below(p, q) || below(q, p)
}

/// Reads the example manifests and their cloud configs from the repository root.
///
/// `examples/manifests/deployment.yml` is interpolated first: its
/// `((variables))` become plain strings, since the director validates
/// interpolated manifests.
pub fn bases(repo: &Path) -> Vec<Base> {
    let read = |rel: &str| {
        let p = repo.join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let cloud =
        |rel: &str| CloudConfig::parse(&read(rel), rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let examples_cloud = cloud("examples/manifests/cloud-config.yml");
    let mut out = Vec::new();
    for (rel, cc) in [
        ("examples/manifests/hello.yml", examples_cloud.clone()),
        ("examples/manifests/deployment.yml", examples_cloud),
        ("api/tests/testdata/base-manifest.yml", cloud("api/tests/testdata/base-cloud-config.yml")),
    ] {
        let mut doc = yaml::parse_value(&read(rel), rel).unwrap_or_else(|e| panic!("{e}"));
        fill_placeholders(&mut doc);
        let yaml = yaml::to_string(&doc).expect("emit");
        out.push(Base { name: rel.to_string(), doc, yaml, cloud: cc });
    }
    out
}

fn fill_placeholders(v: &mut Value) {
    match v {
        Value::String(s) if s.contains("((") => *s = "interpolated".to_string(),
        Value::Array(a) => a.iter_mut().for_each(fill_placeholders),
        Value::Object(o) => o.values_mut().for_each(fill_placeholders),
        _ => {}
    }
}

/// One step of a path inside a document.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn all_paths(v: &Value, prefix: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    if !prefix.is_empty() {
        out.push(prefix.clone());
    }
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                prefix.push(Seg::Index(i));
                all_paths(x, prefix, out);
                prefix.pop();
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                prefix.push(Seg::Key(k.clone()));
                all_paths(x, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Seg]) -> &'a mut Value {
    path.iter().fold(v, |v, s| match s {
        Seg::Key(k) => &mut v[k.as_str()],
        Seg::Index(i) => &mut v[*i],
    })
}

/// Unicode a user might paste by accident or an attacker on purpose.
const UNICODE: &[&str] = &[
    "é",
    "名前",
    "🚀",
    "\u{202E}",
    "\u{200B}",
    "e\u{301}",
    "\u{FEFF}",
    "\u{0}",
    "\u{7}",
    "\n",
    "\u{10FFFF}",
    "Ω≈ç√",
];

/// Where the alias bomb goes; replaced in the emitted YAML.
const BOMB_MARK: &str = "bomb-goes-here-7f3a";

/// Nine levels of ten aliases each: 10^9 strings if expanded.
fn alias_bomb() -> String {
    let mut s = String::from("{l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]");
    for i in 1..9 {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        s.push_str(&format!(", l{i}: &l{i} [{refs}]"));
    }
    s.push_str(", boom: [*l8, *l8, *l8, *l8, *l8, *l8, *l8, *l8, *l8, *l8]}");
    s
}

/// A seeded stream of mutated manifests.
pub struct Generator {
    rng: StdRng,
    bases: Vec<Base>,
    /// Every path of each base, computed once.
    paths: Vec<Vec<Vec<Seg>>>,
}

impl Generator {
    /// A generator over `bases`; the same seed yields the same cases.
    pub fn new(bases: Vec<Base>, seed: u64) -> Generator {
        let paths = bases
            .iter()
            .map(|b| {
                let mut out = Vec::new();
                all_paths(&b.doc, &mut Vec::new(), &mut out);
                out
            })
            .collect();
        Generator { rng: StdRng::seed_from_u64(seed), bases, paths }
    }

    /// The bases, unmutated.
    pub fn bases(&self) -> &[Base] {
        &self.bases
    }

    /// The next case, with the given mutation.
    pub fn case(&mut self, mutation: Mutation) -> Case {
        let base = self.rng.random_range(0..self.bases.len());
        let mut doc = self.bases[base].doc.clone();
        let candidates: Vec<&Vec<Seg>> = self.paths[base]
            .iter()
            .filter(|p| match mutation {
                Mutation::DeleteKey => matches!(p.last(), Some(Seg::Key(_))),
                _ => true,
            })
            .collect();
        let path = (*candidates.choose(&mut self.rng).expect("a path")).clone();
        let mut rendered = render(&path);
        let mut bomb = false;
        match mutation {
            Mutation::TypeFlip => {
                let v = at(&mut doc, &path);
                *v = match v {
                    Value::String(_) => json!(42),
                    Value::Number(_) => json!("forty-two"),
                    Value::Bool(_) => json!([true]),
                    Value::Null => json!({"unexpected": "map"}),
                    Value::Array(_) => json!("not-a-list"),
                    Value::Object(_) => json!(7),
                };
            }
            Mutation::DeleteKey => {
                let (last, parent) = path.split_last().expect("non-empty path");
                let Seg::Key(k) = last else { unreachable!("filtered to keys") };
                if let Value::Object(o) = at(&mut doc, parent) {
                    o.shift_remove(k);
                }
            }
            Mutation::Unicode => {
                let u = *UNICODE.choose(&mut self.rng).expect("unicode");
                let (last, parent) = path.split_last().expect("non-empty path");
                if let Value::String(s) = at(&mut doc, &path) {
                    let cut = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect::<Vec<_>>();
                    let i = *cut.choose(&mut self.rng).expect("a position");
                    s.insert_str(i, u);
                } else if let (Seg::Key(k), Value::Object(o)) = (last, at(&mut doc, parent)) {
                    // Not a string: rename the key instead.
                    let v = o.shift_remove(k).expect("key present");
                    let renamed = format!("{k}{u}");
                    o.insert(renamed.clone(), v);
                    rendered = render(&[parent.to_vec(), vec![Seg::Key(renamed)]].concat());
                } else {
                    *at(&mut doc, &path) = Value::String(u.to_string());
                }
            }
            Mutation::HugeString => {
                let mut s = String::with_capacity(HUGE_STRING_BYTES);
                while s.len() < HUGE_STRING_BYTES {
                    s.push_str("0123456789abcdef");
                }
                *at(&mut doc, &path) = Value::String(s);
            }
            Mutation::AliasBomb => {
                *at(&mut doc, &path) = Value::String(BOMB_MARK.to_string());
                bomb = true;
            }
        }
        let mut yaml = yaml::to_string(&doc).expect("emit");
        if bomb {
            yaml = yaml.replacen(BOMB_MARK, &alias_bomb(), 1);
        }
        Case { base, mutation, path: rendered, yaml }
    }

    /// The next case, with a mutation drawn uniformly from `kinds`.
    pub fn next_case_of(&mut self, kinds: &[Mutation]) -> Case {
        let m = *kinds.choose(&mut self.rng).expect("mutations");
        self.case(m)
    }

    /// The next case, with a mutation drawn uniformly from all of them.
    #[allow(dead_code)] // used by the benchmark, not the test
    pub fn next_case(&mut self) -> Case {
        self.next_case_of(&Mutation::ALL)
    }
}
