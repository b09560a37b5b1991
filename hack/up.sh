#!/usr/bin/env bash
# Sets up and runs a local bosh-rs environment in .bosh-rs/: installs what is
# missing, builds, starts etcd and boshd (with its nats-server and the local
# CPI, whose VMs are runc containers) through `boshctl up`, uploads the
# local Debian stemcell and the sample
# release, sets the cloud config and deploys examples/manifests/hello.yml.
# hack/down.sh stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BOSH_RS_DIR:-.bosh-rs}

hack/install-deps.sh
cargo build --bins
boshctl=target/debug/boshctl
# BOSH DNS on each VM subnet's gateway, the `dns:` of
# examples/manifests/cloud-config.yml: VMs resolve q-s0.web.default.hello.bosh
# (and, through the host's resolvers, the rest), and so does the operator:
#   dig @10.244.1.1 q-s0.web.default.hello.bosh
$boshctl up --data-dir "$dir" \
  --dns-listen 10.244.1.1:53 --dns-listen 10.244.2.1:53 --dns-listen 10.244.3.1:53
# boshctl finds .bosh-rs/ by itself; name the director for another dir.
director_json="$dir/boshd/director.json"
BOSH_DIRECTOR=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["url"])' "$director_json")
BOSH_TOKEN=$(cat "$dir/boshd/api-token")
export BOSH_DIRECTOR BOSH_TOKEN

# The director's side of release engineering: the local stemcell (a Debian
# bookworm root filesystem built with debootstrap, cached per machine in
# ~/.cache/bosh-rs, plus the agent), the sample release (created from a copy
# of examples/release, so the repository stays clean) and the cloud config,
# all through boshd's API.
$boshctl build-local-stemcell --out "$dir/bosh-local-stemcell.tgz"
$boshctl upload-stemcell "$dir/bosh-local-stemcell.tgz"
rm -rf "$dir/release-src" && cp -r examples/release "$dir/release-src"
$boshctl upload-release "$dir/release-src"
$boshctl update-cloud-config examples/manifests/cloud-config.yml

# Deploy, following the task; the deployment controller finishes it.
deployed=yes
timeout "${BOSH_RS_DEPLOY_TIMEOUT:-900}" $boshctl deploy -d hello examples/manifests/hello.yml || deployed=
$boshctl deployments
$boshctl instances -d hello || true

ips=$($boshctl instances -d hello --json 2>/dev/null | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    for n in e["instance"]["spec"].get("networks", []):
        if n.get("ip"):
            print(n["ip"])
' || true)

cat <<EOT

bosh-rs is running (data in $dir):
  etcd  $(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["etcd"])' "$dir/env.json")
  boshd pid $(cat "$dir/boshd.pid"), log $dir/boshd.log, API $BOSH_DIRECTOR
  nats  managed by boshd (config $dir/boshd/nats.conf)
EOT
if [ -n "$deployed" ] && [ -n "$ips" ]; then
  echo "The hello deployment answers on port 8080:"
  for ip in $ips; do echo "  curl http://$ip:8080/"; done
else
  echo "The hello deployment did not finish deploying; see \`$boshctl tasks\`, \`$boshctl task N\` and $dir/boshd.log."
fi
cat <<EOT
Instances: $boshctl instances -d hello --ps
Interpolate a manifest:
  $boshctl interpolate examples/manifests/deployment.yml -o examples/manifests/ops/scale-web.yml -l examples/manifests/vars.yml
Stop:      hack/down.sh
EOT
