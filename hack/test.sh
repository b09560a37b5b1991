#!/usr/bin/env bash
# Runs every test: installs what is missing, then the whole workspace under
# nextest's CI profile, then the fault scenarios with failpoints compiled in. Tests start their own etcd and nats-server.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
# A test killed at its time limit cannot remove its scratch dir, which is
# in /dev/shm (memory): remove those older than two hours (no test runs
# that long; a running test's dir is younger).
find /dev/shm -maxdepth 1 -name 'bosh-rs-*' -mmin +120 -exec rm -rf {} + 2>/dev/null || true
# The big integration tests' futures (the fault scenarios' most of all) are
# held on the test thread's stack in debug builds: give test threads 16 MiB
# rather than 2 (F2 overflowed the default once the harness grew).
export RUST_MIN_STACK=${RUST_MIN_STACK:-16777216}
cargo nextest run --workspace --profile ci
# The fault-matrix scenarios need failpoints compiled in (feature
# `failpoints`, off in every other build); each logs its seed.
cargo nextest run --profile ci -p bosh-controllers --features failpoints -E 'test(/^integration_tests::faults::/)'
