//! Fault scenario F1 (docs/fault-matrix.md): 1,000 manifests mutated from
//! the valid examples (type flips, missing keys, unicode, 10 MB strings,
//! YAML alias bombs) are each validated without a panic, and every
//! rejection says where: a line for YAML errors, the mutated path (or its
//! map, or something under it) for validation errors.
//!
//! The seed is printed; set `BOSH_FUZZ_SEED` to replay or vary a run. Timing
//! and memory are measured in release mode by `e2e/src/bin/bench-validate.rs`,
//! which draws all five mutations uniformly. Here, in a debug build, a 10 MB
//! string or an alias bomb costs around a second, so this test draws the
//! three cheap mutations for 990 cases and runs a fixed handful of each
//! expensive one.

#[path = "support/fuzzed.rs"]
mod fuzzed;

use std::{collections::BTreeMap, path::Path};

use fuzzed::{Generator, Mutation, Outcome};

/// The default seed, so CI runs the same 1,000 cases every time.
const SEED: u64 = 0xF1_2026;

fn seed() -> u64 {
    std::env::var("BOSH_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED)
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The unmutated examples are valid, so every rejection below is the mutation's doing.
#[test]
fn example_manifests_are_valid_before_mutation() {
    for b in fuzzed::bases(repo()) {
        match fuzzed::validate(&b.yaml, &b.cloud) {
            Outcome::Valid => {}
            Outcome::Yaml(e) => panic!("{}: {e}", b.name),
            Outcome::Invalid(e) => panic!("{}: {e}", b.name),
        }
    }
}

/// 1,000 mutated manifests: no panic, and every rejection names where it is.
#[test]
fn fuzzed_manifests_are_rejected_naming_the_field_path() {
    let seed = seed();
    println!("F1 seed: {seed} (BOSH_FUZZ_SEED to change)");
    let mut generator = Generator::new(fuzzed::bases(repo()), seed);
    // (rejected, accepted) per mutation.
    let mut tally: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut accepted_flips = std::collections::BTreeSet::new();
    let cheap = [Mutation::TypeFlip, Mutation::DeleteKey, Mutation::Unicode];
    for i in 0..1_000 {
        let case = match i {
            0..5 => generator.case(Mutation::HugeString),
            5..10 => generator.case(Mutation::AliasBomb),
            _ => generator.next_case_of(&cheap),
        };
        let cloud = generator.bases()[case.base].cloud.clone();
        let outcome = std::panic::catch_unwind(|| fuzzed::validate(&case.yaml, &cloud))
            .unwrap_or_else(|_| panic!("case {i} ({:?} at {}) panicked", case.mutation, case.path));
        let t = tally.entry(case.mutation.name()).or_default();
        match &outcome {
            Outcome::Valid if case.mutation == Mutation::TypeFlip => {
                t.1 += 1;
                accepted_flips.insert(case.path.clone());
            }
            Outcome::Valid => t.1 += 1,
            _ => t.0 += 1,
        }
        if let Err(why) = fuzzed::names_path(&case, &outcome) {
            failures.push(format!("case {i}: {} at {}: {why}", case.mutation.name(), case.path));
        }
        // Error messages are shown to users and stored in conditions: a 10 MB
        // value must not be echoed back whole.
        let shown = match &outcome {
            Outcome::Valid => 0,
            Outcome::Yaml(e) => e.to_string().len(),
            Outcome::Invalid(e) => e.to_string().len(),
        };
        if shown > 64 << 10 {
            failures.push(format!(
                "case {i}: {} at {}: {shown}-byte error",
                case.mutation.name(),
                case.path
            ));
        }
    }
    println!("type flips still valid at: {accepted_flips:?}");
    for (m, (rejected, accepted)) in &tally {
        println!("{m}: {rejected} rejected, {accepted} still valid");
    }
    assert!(
        failures.is_empty(),
        "{} of 1000 cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // Every kind of mutation was exercised, and the bombs never got through.
    assert_eq!(tally.len(), Mutation::ALL.len(), "{tally:?}");
    assert_eq!(tally["alias bomb"].1, 0, "an alias bomb was accepted");
}
