#!/usr/bin/env bash
# Side by side: pos-hub, NATS JetStream and etcd (3 nodes each, this machine), a closed-loop
# run with 64 clients, then open-loop runs at rising offered loads. Writes one JSON per run
# and an SVG of append p99 latency against offered load, one line per system.
#
#   bench/peers.sh                      # once: installs nats-server and etcd
#   cargo build --release -p pos-hub -p pos-hub-bench
#   bench/compare.sh [OUT_DIR] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/bench-compare}"
seconds="${2:-20}"
bin="target/release/pos-hub"
[ -x "$bin" ] && [ -x "$bin-bench" ] \
  || { echo "build them first: cargo build --release -p pos-hub -p pos-hub-bench" >&2; exit 2; }
mkdir -p "$out"
echo "== closed loop, 64 clients, ${seconds} s"
"$bin" bench --nodes 3 --clients 64 --seconds "$seconds" --compare --quiet \
  --json "$out/closed-64.json" | tee "$out/closed-64.txt"
for rate in 250 500 1000 2000; do
  echo "== open loop, ${rate} appends/s offered, ${seconds} s"
  "$bin" bench --nodes 3 --clients 64 --seconds "$seconds" --rate "$rate" --compare --quiet \
    --json "$out/open-$rate.json" | tee "$out/open-$rate.txt"
done
python3 bench/plot.py "$out" "$out/latency-vs-load.svg"
echo "results: $out"
