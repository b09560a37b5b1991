#!/usr/bin/env bash
# Stops what hack/up.sh started (`boshctl down`: boshd, etcd and the local
# VMs); the data stays in .bosh-rs/.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BOSH_RS_DIR:-.bosh-rs}
if [ -x target/debug/boshctl ]; then
  target/debug/boshctl down --data-dir "$dir"
else
  cargo run -q --bin boshctl -- down --data-dir "$dir"
fi
# An environment started by an older up.sh (hack/servers.sh) stops too.
hack/servers.sh stop "$dir" >/dev/null
# `boshctl down` took the local VMs along (containers, mounts, network
# namespaces, veths, bridges): nothing of the environment is left running.
