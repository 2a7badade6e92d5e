#!/usr/bin/env bash
# The whole thing in one go, on a fresh Debian/Ubuntu machine with Rust:
# installs redis-server if missing, builds, starts a private Redis and three
# copies, kills the generator with kill -9, shows the takeover, then get-errors.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null; then
  echo "== installing redis-server"
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi

echo "== building"
cargo build --release --quiet
APP=target/release/app

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 6390)
PIDS=()
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== private Redis on port $PORT (in $WORK)"
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" --daemonize yes --logfile "$WORK/redis.log"
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done

run() { "$APP" -h 127.0.0.1 -p "$PORT" "$@"; }
for name in alpha beta gamma; do
  "$APP" -h 127.0.0.1 -p "$PORT" start --name "$name" 2>"$WORK/$name.log" &
  PIDS+=($!)
done

echo "== three copies started; after 4 s:"
sleep 4
run status
echo
echo "== what the copies said (generator and processors):"
tail -n 3 "$WORK"/alpha.log "$WORK"/beta.log "$WORK"/gamma.log | cut -c 1-160

LEADER=$(run status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"]["pid"])')
echo
echo "== kill -9 of the generator (pid $LEADER)"
kill -9 "$LEADER"
sleep 3
run status
echo
echo "== the takeover, as the new generator logged it:"
grep -h "became the generator" "$WORK"/*.log | tail -n 1 | cut -c 1-200

sleep 2
echo
echo "== app get-errors (5 % of messages are errors):"
run get-errors
