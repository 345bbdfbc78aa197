#!/usr/bin/env bash
# GET throughput of a local 3-node kv_store cluster with wrk, at 1, 16 and 64 connections,
# all requests to the leader, random keys among 1,000 written first.
# Usage: examples/kv_store/scripts/read_bench.sh [seconds per run, default 10]
# READ_LEASE_TICKS=N turns on leader leases (read_lease_ticks = N in every node's [node]).
# Needs wrk (Debian package `wrk`) and a release build: cargo build --release -p kv_store
set -euo pipefail
cd "$(dirname "$0")/../../.."
secs=${1:-10}
bin=${KV_BIN:-target/release/kv_store}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for pid in 1 2 3; do
  cat > "$dir/node$pid.toml" <<TOML
[cluster_config]
configuration_id = 1
nodes = [1, 2, 3]

[server_config]
pid = $pid
election_tick_timeout = 10

[node]
peer_addr = "127.0.0.1:1760$pid"
http_addr = "127.0.0.1:1860$pid"
data_dir = "$dir/data$pid"
${READ_LEASE_TICKS:+read_lease_ticks = $READ_LEASE_TICKS}

[peers]
TOML
  for other in 1 2 3; do
    [ "$other" = "$pid" ] || echo "$other = \"127.0.0.1:1760$other\"" >> "$dir/node$pid.toml"
  done
  "$bin" node --config "$dir/node$pid.toml" > "$dir/node$pid.log" 2>&1 &
done
leader=""
for _ in $(seq 1 100); do
  leader=$(curl -s http://127.0.0.1:18601/status | sed -n 's/.*"leader":\([0-9]*\).*"leader_ready":true.*/\1/p')
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { echo "no leader" >&2; exit 1; }
for k in $(seq 0 999); do
  curl -s -X PUT --data "value$k" "http://127.0.0.1:1860$leader/kv/key$k" > /dev/null
done
cat > "$dir/get.lua" <<'LUA'
request = function()
  return wrk.format("GET", "/kv/key" .. math.random(0, 999))
end
LUA
echo "leader: node $leader"
for c in 1 16 64; do
  threads=$(( c < 2 ? 1 : 2 ))
  out=$(wrk -t "$threads" -c "$c" -d "${secs}s" --latency -s "$dir/get.lua" "http://127.0.0.1:1860$leader")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  echo "GET, $c connections: $rps requests/s, p99 $p99${errors:+, non-2xx $errors}"
done
