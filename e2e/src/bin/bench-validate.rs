//! Fault scenario F1 (docs/fault-matrix.md): how long manifest validation
//! takes, and how much memory it needs, on fuzzed manifests (type flips,
//! missing keys, unicode, 10 MB strings, YAML alias bombs), against a
//! baseline of the unmutated examples measured in the same run.
//!
//! Each case is timed from YAML text to verdict: parse, shape and semantic
//! checks, typed read, cross-check against the cloud config (what the
//! director does for a deploy). Peak RSS is the process's VmHWM, so it
//! includes the generator's own copy of each case.
//!
//! `cargo run --release -p bosh-e2e --bin bench-validate -- --cases 1000`

#[path = "../../../api/tests/support/fuzzed.rs"]
mod fuzzed;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use fuzzed::{Generator, Mutation, Outcome};

#[derive(Debug, Parser)]
struct Args {
    /// Mutated manifests to validate.
    #[arg(long, default_value_t = 1_000)]
    cases: usize,
    /// RNG seed (printed; the same seed gives the same cases).
    #[arg(long, default_value_t = 0xF1_2026)]
    seed: u64,
    /// Validations of each unmutated example for the baseline.
    #[arg(long, default_value_t = 200)]
    baseline_rounds: usize,
}

/// Peak resident set size of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(name: &str, times: &mut [Duration]) -> (Duration, Duration, Duration) {
    times.sort();
    let (p50, p99, max) = (
        percentile(times, 0.50),
        percentile(times, 0.99),
        times.last().copied().unwrap_or_default(),
    );
    println!(
        "{name:<14} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        times.len(),
        ms(p50),
        ms(p99),
        ms(max)
    );
    (p50, p99, max)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut generator = Generator::new(fuzzed::bases(&repo), args.seed);
    println!("F1 bench-validate: {} cases, seed {}", args.cases, args.seed);

    // Baseline: the unmutated examples.
    let mut baseline = Vec::new();
    for _ in 0..args.baseline_rounds {
        for b in generator.bases() {
            let t = Instant::now();
            let outcome = fuzzed::validate(&b.yaml, &b.cloud);
            baseline.push(t.elapsed());
            if !matches!(outcome, Outcome::Valid) {
                bail!("{} is not valid before mutation", b.name);
            }
        }
    }
    let baseline_rss = peak_rss_kib();

    let mut all = Vec::new();
    let mut by_mutation: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut named: BTreeMap<(&str, String), usize> = BTreeMap::new();
    let (mut panics, mut unnamed, mut max_message) = (0usize, Vec::new(), 0usize);
    let mut slowest: Vec<(Duration, String)> = Vec::new();
    for i in 0..args.cases {
        let case = generator.next_case();
        let cloud = &generator.bases()[case.base].cloud;
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(|| fuzzed::validate(&case.yaml, cloud));
        let took = t.elapsed();
        all.push(took);
        by_mutation.entry(case.mutation.name()).or_default().push(took);
        let Ok(outcome) = outcome else {
            panics += 1;
            continue;
        };
        let message = match &outcome {
            Outcome::Valid => 0,
            Outcome::Yaml(e) => e.to_string().len(),
            Outcome::Invalid(e) => e.to_string().len(),
        };
        max_message = max_message.max(message);
        slowest.push((
            took,
            format!("{} at {} ({message}-byte error)", case.mutation.name(), case.path),
        ));
        slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
        slowest.truncate(5);
        match fuzzed::names_path(&case, &outcome) {
            Ok(n) => *named.entry((case.mutation.name(), format!("{n:?}"))).or_default() += 1,
            Err(why) => {
                unnamed.push(format!("case {i}: {} at {}: {why}", case.mutation.name(), case.path))
            }
        }
    }
    let peak = peak_rss_kib();

    println!();
    let (b50, b99, _) = summary("baseline", &mut baseline);
    let (_, p99, max) = summary("fuzzed", &mut all);
    for m in Mutation::ALL {
        if let Some(t) = by_mutation.get_mut(m.name()) {
            summary(m.name(), t);
        }
    }
    println!();
    for ((m, n), count) in &named {
        println!("{m:<14} {n:<12} {count}");
    }
    for (t, what) in &slowest {
        println!("slow: {:>9.3} ms  {what}", ms(*t));
    }
    for u in unnamed.iter().take(10) {
        println!("NOT NAMED: {}", u.chars().take(400).collect::<String>());
    }
    println!();
    let ratio = p99.as_secs_f64() / b99.as_secs_f64().max(1e-9);
    println!("panics: {panics}");
    println!("rejections without a path or line: {}", unnamed.len());
    println!("longest error message: {max_message} bytes");
    println!("p99 fuzzed / p99 baseline: {ratio:.1}x (baseline p50 {:.3} ms)", ms(b50));
    println!(
        "peak RSS: {:.1} MiB (after baseline {:.1} MiB)",
        peak as f64 / 1024.0,
        baseline_rss as f64 / 1024.0
    );
    println!(
        "F1 cases={} seed={} panics={panics} unnamed={} p99_ms={:.3} max_ms={:.3} \
         baseline_p99_ms={:.3} ratio={ratio:.1} peak_rss_mib={:.1} max_error_bytes={max_message}",
        args.cases,
        args.seed,
        unnamed.len(),
        ms(p99),
        ms(max),
        ms(b99),
        peak as f64 / 1024.0
    );
    Ok(())
}
