#!/usr/bin/env bash
# Installs what bosh-rs needs and a fresh Debian machine lacks: etcd and
# etcdctl, nats-server, protoc (to build etcd-client) and ruby (ERB
# templates). Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v ruby >/dev/null 2>&1 || need+=(ruby)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
