#!/usr/bin/env bash
# Starts or stops etcd and nats-server on loopback with their data in a
# directory (default .bosh-rs), recording ports and pids in DIR/servers.env.
#   hack/servers.sh start [DIR] [etcd]    hack/servers.sh stop [DIR]    hack/servers.sh status [DIR]
# With `etcd`, only etcd starts (boshd runs its own nats-server).
# etcd requires client certificates (made with openssl in DIR/etcd-tls, as
# `boshctl up` makes them); servers.env names them for boshd
# (BOSH_ETCD_CA, BOSH_ETCD_CERT, BOSH_ETCD_KEY are boshd's env variables).
set -euo pipefail
cmd=${1:-status}
dir=$(realpath -m "${2:-.bosh-rs}")
only=${3:-all}
envf="$dir/servers.env"

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# make_certs DIR: a CA, a server certificate for loopback (also used for
# peers) and a client certificate; keys 0600 in a 0700 dir, CA key removed.
make_certs() {
  local d=$1
  [ -f "$d/ca.crt" ] && [ -f "$d/client.key" ] && [ -f "$d/server.key" ] && return 0
  (umask 077 && mkdir -p "$d")
  chmod 700 "$d"
  (
    umask 077
    cd "$d"
    ec() { openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "$@" 2>/dev/null; }
    ec -x509 -days 3650 -subj "/O=bosh-rs/CN=bosh-rs etcd CA" -keyout ca.key -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign"
    ec -subj "/O=bosh-rs/CN=etcd" -keyout server.key -out server.csr
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out server.crt \
      -extfile <(printf 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n') 2>/dev/null
    ec -subj "/O=bosh-rs/CN=boshd" -keyout client.key -out client.csr
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out client.crt \
      -extfile <(printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n') 2>/dev/null
    rm -f ca.key ca.srl server.csr client.csr
    chmod 600 ./*
  )
}

case "$cmd" in
start)
  (umask 077 && mkdir -p "$dir")
  tls="$dir/etcd-tls"
  make_certs "$tls"
  etcdctl_tls=(--cacert "$tls/ca.crt" --cert "$tls/client.crt" --key "$tls/client.key")
  etcd_tls=()
  for p in "" peer-; do
    etcd_tls+=("--${p}client-cert-auth" "--${p}trusted-ca-file" "$tls/ca.crt"
      "--${p}cert-file" "$tls/server.crt" "--${p}key-file" "$tls/server.key")
  done
  if [ -f "$envf" ]; then
    # shellcheck disable=SC1090
    . "$envf"
    if alive "${ETCD_PID:-}" && { [ "$only" = etcd ] || alive "${NATS_PID:-}"; }; then
      echo "already running: etcd $BOSH_ETCD${NATS_PID:+, nats $BOSH_NATS}"
      exit 0
    fi
    "$0" stop "$dir" >/dev/null
  fi
  ec=$(free_port); ep=$(free_port); np=$(free_port)
  setsid etcd --name boshrs --data-dir "$dir/etcd" \
    --listen-client-urls "https://127.0.0.1:$ec" --advertise-client-urls "https://127.0.0.1:$ec" \
    --listen-peer-urls "https://127.0.0.1:$ep" --initial-advertise-peer-urls "https://127.0.0.1:$ep" \
    --initial-cluster "boshrs=https://127.0.0.1:$ep" --logger zap --log-level warn "${etcd_tls[@]}" \
    >"$dir/etcd.log" 2>&1 </dev/null &
  etcd_pid=$!
  nats_pid=
  if [ "$only" != etcd ]; then
    setsid nats-server -a 127.0.0.1 -p "$np" >"$dir/nats.log" 2>&1 </dev/null &
    nats_pid=$!
  fi
  cat >"$envf" <<EOT
BOSH_ETCD=127.0.0.1:$ec
BOSH_ETCD_CA=$tls/ca.crt
BOSH_ETCD_CERT=$tls/client.crt
BOSH_ETCD_KEY=$tls/client.key
BOSH_NATS=nats://127.0.0.1:$np
ETCD_PID=$etcd_pid
NATS_PID=$nats_pid
EOT
  for _ in $(seq 100); do
    if etcdctl --endpoints="https://127.0.0.1:$ec" "${etcdctl_tls[@]}" endpoint health >/dev/null 2>&1 \
      && { [ -z "$nats_pid" ] || (exec 3<>"/dev/tcp/127.0.0.1/$np") 2>/dev/null; }; then
      echo "etcd 127.0.0.1:$ec${nats_pid:+ and nats 127.0.0.1:$np} running (data in $dir)"
      exit 0
    fi
    alive "$etcd_pid" || { echo "etcd died; see $dir/etcd.log" >&2; exit 1; }
    [ -z "$nats_pid" ] || alive "$nats_pid" || { echo "nats-server died; see $dir/nats.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "etcd or nats-server did not become ready; see $dir/*.log" >&2
  exit 1
  ;;
stop)
  [ -f "$envf" ] || exit 0
  # shellcheck disable=SC1090
  . "$envf"
  for pid in "${ETCD_PID:-}" "${NATS_PID:-}"; do
    if alive "$pid"; then kill "$pid"; fi
  done
  for pid in "${ETCD_PID:-}" "${NATS_PID:-}"; do
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  done
  rm -f "$envf"
  echo "stopped etcd and nats-server"
  ;;
status)
  if [ -f "$envf" ]; then
    # shellcheck disable=SC1090
    . "$envf"
    alive "${ETCD_PID:-}" && echo "etcd $BOSH_ETCD (pid $ETCD_PID)" || echo "etcd: not running"
    if [ -n "${NATS_PID:-}" ]; then
      alive "$NATS_PID" && echo "nats $BOSH_NATS (pid $NATS_PID)" || echo "nats: not running"
    fi
  else
    echo "not running"
  fi
  ;;
*)
  echo "usage: $0 start|stop|status [DIR]" >&2
  exit 2
  ;;
esac
