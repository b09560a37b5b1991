#!/usr/bin/env bash
# Runs every test: installs what is missing, then the whole workspace under
# nextest's CI profile. Tests start their own etcd and nats-server.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
cargo nextest run --workspace --profile ci
