#!/usr/bin/env bash
# Sets up and runs a local bosh-rs environment in .bosh-rs/: installs what is
# missing, builds, starts etcd and nats-server on loopback, starts boshd, and
# loads the example cloud config, runtime config and deployment the way a
# GitOps tool would. hack/down.sh stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BOSH_RS_DIR:-.bosh-rs}

hack/install-deps.sh
cargo build --bins
hack/servers.sh start "$dir" etcd
# shellcheck disable=SC1091
. "$dir/servers.env"

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid=$(cat "$dir/boshd.pid" 2>/dev/null || true)
if alive "$pid"; then
  echo "boshd already running (pid $pid)"
else
  nats_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()')
  setsid target/debug/boshd --etcd "$BOSH_ETCD" --nats-listen "127.0.0.1:$nats_port" --data-dir "$dir/boshd" \
    >>"$dir/boshd.log" 2>&1 </dev/null &
  echo $! >"$dir/boshd.pid"
  echo "boshd started (pid $!, log $dir/boshd.log)"
fi

# boshd is up when every controller has a leader.
for _ in $(seq 300); do
  n=$(etcdctl --endpoints="$BOSH_ETCD" get --prefix /bosh/leases/ --keys-only 2>/dev/null | grep -c . || true)
  [ "$n" -ge 2 ] && break
  alive "$(cat "$dir/boshd.pid")" || { echo "boshd exited; see $dir/boshd.log" >&2; exit 1; }
  sleep 0.1
done
[ "$n" -ge 2 ] || { echo "boshd's controllers did not elect leaders; see $dir/boshd.log" >&2; exit 1; }

# The director's side of release engineering: a local stemcell built from
# the agent, the sample release (created from a copy of examples/release, so
# the repository stays clean) and the cloud config, all through boshd's API.
boshctl=target/debug/boshctl
$boshctl build-local-stemcell --out "$dir/bosh-local-stemcell.tgz"
$boshctl upload-stemcell "$dir/bosh-local-stemcell.tgz"
rm -rf "$dir/release-src" && cp -r examples/release "$dir/release-src"
$boshctl upload-release "$dir/release-src"
$boshctl update-cloud-config examples/manifests/cloud-config.yml

# A deployment written straight into etcd, as a GitOps tool would; boshd
# validates it and compiles its packages on compile VMs.
target/debug/load-examples --etcd "$BOSH_ETCD"
echo "Waiting for boshd to compile the hello deployment's packages..."
compiled=
for _ in $(seq 600); do
  state=$($boshctl get deployments hello -o json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
c = [c for c in d.get("status", {}).get("conditions", []) if c["type"] == "PackagesCompiled"]
print((c[0]["status"] + " " + c[0].get("reason", "") + " " + c[0].get("message", "")) if c else "Pending")
' || true)
  case "$state" in
    True*) compiled=yes; break ;;
    False\ PackageCompileFailed*) echo "compilation failed: $state" >&2; exit 1 ;;
  esac
  sleep 0.5
done
[ -n "$compiled" ] || { echo "packages were not compiled in time ($state); see $dir/boshd.log" >&2; exit 1; }
$boshctl releases
$boshctl stemcells
$boshctl get deployments

cat <<EOT

bosh-rs is running (data in $dir):
  etcd  $BOSH_ETCD
  nats  managed by boshd (config $dir/boshd/nats.conf)
  boshd pid $(cat "$dir/boshd.pid"), log $dir/boshd.log, API $(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["url"])' "$dir/boshd/director.json")
Objects:   etcdctl --endpoints=$BOSH_ETCD get --prefix /bosh/ --keys-only
Interpolate a manifest:
  target/debug/boshctl interpolate examples/manifests/deployment.yml -o examples/manifests/ops/scale-web.yml -l examples/manifests/vars.yml
Stop:      hack/down.sh
EOT
