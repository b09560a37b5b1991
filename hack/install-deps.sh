#!/usr/bin/env bash
# Installs what bosh-rs needs and a fresh Debian machine lacks, and checks
# for the files the build and the tests actually use, not only command names:
#   etcd, etcdctl            the store (etcd-server, etcd-client)
#   nats-server              the message bus
#   protoc + descriptor.proto etcd-client's build script compiles etcd's
#                            .proto files, which import protobuf's well-known
#                            types (protobuf-compiler, libprotobuf-dev)
#   ruby + erb               job templates (ruby)
#   openssl                  hack/servers.sh makes etcd's certificates with it
#                            (`boshctl up` and the tests make theirs in Rust)
#   debootstrap + keyring    `boshctl build-local-stemcell` builds the
#                            stemcell's Debian root filesystem with it; it
#                            checks bookworm's Release file against
#                            debian-archive-keyring, and needs bookworm's
#                            script in /usr/share/debootstrap/scripts
#   runc                     runs the local CPI's VMs as containers
#   openssh-client           `boshctl ssh` and `boshctl scp` run ssh, scp and
#                            ssh-keygen (for the session's throwaway key)
#   dig                      the DNS tests ask boshd's BOSH DNS with it, as an
#                            operator would (dnsutils)
#   moto_server              the s3 release blobstore tests run moto's
#                            S3-compatible server; it comes from PyPI into a
#                            venv of its own (python3-venv), never into the
#                            system's Python: $MOTO_VENV/bin/moto_server
#   gcp-storage-emulator     the gcs release blobstore tests run this
#                            GCS-compatible server (JSON API uploads and
#                            downloads; pure Python, from PyPI) in a venv of
#                            its own beside moto's:
#                            $GCS_EMULATOR_VENV/bin/gcp-storage-emulator
# Idempotent: installs only what is missing, then verifies everything.
set -euo pipefail

# Each entry: "package|check", the check a shell test that is true when the
# package's files are there.
wanted=(
  "etcd-server|command -v etcd"
  "etcd-client|command -v etcdctl"
  "nats-server|command -v nats-server"
  "protobuf-compiler|command -v protoc"
  "libprotobuf-dev|protoc_include_ok"
  "ruby|command -v ruby && command -v erb"
  "openssl|command -v openssl"
  "debootstrap|command -v debootstrap && [ -e /usr/share/debootstrap/scripts/bookworm ]"
  "debian-archive-keyring|[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]"
  "runc|command -v runc && runc --version"
  "openssh-client|[ -x /usr/bin/ssh ] && [ -x /usr/bin/scp ] && [ -x /usr/bin/ssh-keygen ]"
  "dnsutils|command -v dig"
  "python3-venv|python3 -c 'import venv, ensurepip'"
)

# moto's server for the s3 blobstore tests (test-utils' `moto` finds it here,
# or at $BOSH_RS_MOTO). Pinned, so every machine tests against the same server.
MOTO_VERSION=5.1.20
MOTO_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/bosh-rs/moto
moto_ok() {
  [ -x "$MOTO_VENV/bin/moto_server" ] \
    && "$MOTO_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$MOTO_VERSION')" \
    && "$MOTO_VENV/bin/moto_server" --help >/dev/null
}

# The GCS emulator for the gcs blobstore tests (test-utils' `gcs` finds it
# here, or at $BOSH_RS_GCS_EMULATOR). Pinned, like moto; a venv of its own so
# neither server's dependencies move the other's.
GCS_EMULATOR_VERSION=2026.7.19
GCS_EMULATOR_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/bosh-rs/gcs-emulator
gcs_emulator_ok() {
  [ -x "$GCS_EMULATOR_VENV/bin/gcp-storage-emulator" ] \
    && "$GCS_EMULATOR_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('gcp-storage-emulator') != '$GCS_EMULATOR_VERSION')" \
    && "$GCS_EMULATOR_VENV/bin/python" -c "import gcp_storage_emulator.server" \
    && "$GCS_EMULATOR_VENV/bin/gcp-storage-emulator" start --help >/dev/null
}

# protoc finds the well-known types either next to itself or in
# /usr/include; etcd-client's protos import google/protobuf/descriptor.proto.
protoc_include_ok() {
  local d
  for d in /usr/include /usr/local/include; do
    [ -f "$d/google/protobuf/descriptor.proto" ] && return 0
  done
  return 1
}

need=()
for entry in "${wanted[@]}"; do
  pkg=${entry%%|*}
  check=${entry#*|}
  eval "$check" >/dev/null 2>&1 || need+=("$pkg")
done

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! moto_ok >/dev/null 2>&1; then
  echo "installing moto[server]==$MOTO_VERSION into $MOTO_VENV"
  [ -x "$MOTO_VENV/bin/pip" ] || python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION"
fi

if ! gcs_emulator_ok >/dev/null 2>&1; then
  echo "installing gcp-storage-emulator==$GCS_EMULATOR_VERSION into $GCS_EMULATOR_VENV"
  [ -x "$GCS_EMULATOR_VENV/bin/pip" ] || python3 -m venv "$GCS_EMULATOR_VENV"
  "$GCS_EMULATOR_VENV/bin/pip" install -q "gcp-storage-emulator==$GCS_EMULATOR_VERSION"
fi

missing=()
for entry in "${wanted[@]}"; do
  pkg=${entry%%|*}
  check=${entry#*|}
  eval "$check" >/dev/null 2>&1 || missing+=("$pkg ($check)")
done
# The include must also be usable by protoc itself, as the build uses it.
if protoc_include_ok; then
  probe=$(mktemp -d)
  printf 'syntax = "proto3";\nimport "google/protobuf/descriptor.proto";\n' >"$probe/probe.proto"
  protoc -I"$probe" -I/usr/include --descriptor_set_out=/dev/null "$probe/probe.proto" 2>"$probe/err" \
    || missing+=("protoc cannot compile an import of descriptor.proto: $(cat "$probe/err")")
  rm -rf "$probe"
fi
moto_ok >/dev/null 2>&1 || missing+=("moto_server $MOTO_VERSION ($MOTO_VENV/bin/moto_server --help)")
gcs_emulator_ok >/dev/null 2>&1 \
  || missing+=("gcp-storage-emulator $GCS_EMULATOR_VERSION ($GCS_EMULATOR_VENV/bin/gcp-storage-emulator start --help)")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'install-deps: still missing after install:\n' >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
