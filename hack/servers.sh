#!/usr/bin/env bash
# Starts or stops etcd and nats-server on loopback with their data in a
# directory (default .bosh-rs), recording ports and pids in DIR/servers.env.
#   hack/servers.sh start [DIR]    hack/servers.sh stop [DIR]    hack/servers.sh status [DIR]
set -euo pipefail
cmd=${1:-status}
dir=$(realpath -m "${2:-.bosh-rs}")
envf="$dir/servers.env"

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

case "$cmd" in
start)
  mkdir -p "$dir"
  if [ -f "$envf" ]; then
    # shellcheck disable=SC1090
    . "$envf"
    if alive "${ETCD_PID:-}" && alive "${NATS_PID:-}"; then
      echo "already running: etcd $BOSH_ETCD, nats $BOSH_NATS"
      exit 0
    fi
    "$0" stop "$dir" >/dev/null
  fi
  ec=$(free_port); ep=$(free_port); np=$(free_port)
  setsid etcd --name boshrs --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$ec" --advertise-client-urls "http://127.0.0.1:$ec" \
    --listen-peer-urls "http://127.0.0.1:$ep" --initial-advertise-peer-urls "http://127.0.0.1:$ep" \
    --initial-cluster "boshrs=http://127.0.0.1:$ep" --logger zap --log-level warn \
    >"$dir/etcd.log" 2>&1 </dev/null &
  etcd_pid=$!
  setsid nats-server -a 127.0.0.1 -p "$np" >"$dir/nats.log" 2>&1 </dev/null &
  nats_pid=$!
  cat >"$envf" <<EOT
BOSH_ETCD=127.0.0.1:$ec
BOSH_NATS=nats://127.0.0.1:$np
ETCD_PID=$etcd_pid
NATS_PID=$nats_pid
EOT
  for _ in $(seq 100); do
    if etcdctl --endpoints="127.0.0.1:$ec" endpoint health >/dev/null 2>&1 \
      && (exec 3<>"/dev/tcp/127.0.0.1/$np") 2>/dev/null; then
      echo "etcd 127.0.0.1:$ec and nats 127.0.0.1:$np running (data in $dir)"
      exit 0
    fi
    alive "$etcd_pid" || { echo "etcd died; see $dir/etcd.log" >&2; exit 1; }
    alive "$nats_pid" || { echo "nats-server died; see $dir/nats.log" >&2; exit 1; }
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
    alive "${NATS_PID:-}" && echo "nats $BOSH_NATS (pid $NATS_PID)" || echo "nats: not running"
  else
    echo "not running"
  fi
  ;;
*)
  echo "usage: $0 start|stop|status [DIR]" >&2
  exit 2
  ;;
esac
