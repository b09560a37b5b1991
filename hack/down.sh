#!/usr/bin/env bash
# Stops what hack/up.sh started (`boshctl down`, and the local VMs); the
# data stays in .bosh-rs/.
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
# The local CPI's VMs outlive boshd by design (as real VMs outlive a
# director); a local environment going down takes them along. After the
# next up.sh, boshd finds their agents silent and resurrects them.
vms="$(cd "$dir" 2>/dev/null && pwd)/boshd/cpi/vms/"
if [ -d "$vms" ]; then
  pkill -KILL -f "$vms" 2>/dev/null || true
fi
