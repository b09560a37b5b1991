//! Benchmarks of bosh-rs against real etcd, NATS, agents and boshd. Each
//! binary in `src/bin/` measures one area and prints every figure next to a
//! baseline measured in the same run; `BENCHMARKS.md` records the runs and
//! the commands that repeat them.
//!
//! The library is empty and the crate holds no tests. End-to-end tests live
//! beside what they test: `controllers/tests/` runs the director against
//! real etcd, NATS and agents (the fault scenarios included), and
//! `cli/tests/` runs `boshctl` against a real API server.
//!
//! # Layout
//!
//! - `bench-foundation`: the store and the controller runtime.
//! - `bench-agents`: agent round trips, bootstrap and idle load (issue 4).
//! - `bench-releases`: `create-release`, upload and compile fan-out (issue 5).
//! - `bench-deploy`: converge time and steady state of a deployment (issue 6).
//! - `bench-resurrect`: resurrection latency and the health monitor (issue 7).
//! - `bench-api-latency`: API latency while a large deployment is planned
//!   (issue 12).
//! - `bench-validate`: manifest validation on fuzzed input (fault scenario F1).
