#!/usr/bin/env bash
# Stops what hack/up.sh started; the data stays in .bosh-rs/.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BOSH_RS_DIR:-.bosh-rs}
pid=$(cat "$dir/boshd.pid" 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  echo "stopped boshd"
fi
rm -f "$dir/boshd.pid"
hack/servers.sh stop "$dir"
