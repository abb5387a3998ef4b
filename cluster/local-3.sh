#!/usr/bin/env bash
# A local 3-node pos-hub group on loopback, for trying failover on one machine.
#   cluster/local-3.sh start   # builds, starts nodes 1-3 (data in cluster/.local-3/) and
#                              # prints web app pairing links for a till, a KDS and a BDS
#   cluster/local-3.sh status  # the group as node 1 sees it
#   cluster/local-3.sh stop    # stops all three (SIGTERM)
# Client ports 5101-5103, peer ports 5201-5203. Logs: cluster/.local-3/node-N.log
# The first start makes a store key (cluster/.local-3/store.*.pem) and an admin token
# (cluster/.local-3/admin.token); devices need tokens too, e.g.
#   target/release/pos-hub token issue --key cluster/.local-3/store.key.pem \
#     --tenant t-demo --store s-001 --device till-1 --role till
set -euo pipefail
cd "$(dirname "$0")/.."
dir=cluster/.local-3
bin=target/release/pos-hub
members="1=127.0.0.1:5201/127.0.0.1:5101,2=127.0.0.1:5202/127.0.0.1:5102,3=127.0.0.1:5203/127.0.0.1:5103"

case "${1:-}" in
  start)
    cargo build --release --locked
    mkdir -p "$dir"
    [ -f "$dir/store.key.pem" ] || "$bin" keygen --out-dir "$dir" >/dev/null
    "$bin" token issue --key "$dir/store.key.pem" --tenant "${TENANT_ID:-t-demo}" \
      --store "${STORE_ID:-s-001}" --device operator --role admin --ttl 1d >"$dir/admin.token"
    for n in 1 2 3; do
      "$bin" serve --node-id "$n" --data-dir "$dir/node-$n" \
        --listen "127.0.0.1:510$n" --peer-listen "127.0.0.1:520$n" \
        --initial-cluster "$members" --tenant "${TENANT_ID:-t-demo}" --store "${STORE_ID:-s-001}" \
        --public-key "$dir/store.pub.pem" --menu examples/menu.json \
        >"$dir/node-$n.log" 2>&1 &
      echo $! >"$dir/node-$n.pid"
    done
    for _ in $(seq 1 50); do
      if curl -fsS http://127.0.0.1:5101/healthz >/dev/null 2>&1; then
        "$bin" cluster --hub http://127.0.0.1:5101 --token "$(cat "$dir/admin.token")" status
        echo "web app pairing links (till on node 1, kitchen on node 2, bar on node 3):"
        for screen in "till-1 till 1" "kds-1 kds 2" "bds-1 bds 3"; do
          set -- $screen
          "$bin" token issue --key "$dir/store.key.pem" --tenant "${TENANT_ID:-t-demo}" \
            --store "${STORE_ID:-s-001}" --device "$1" --role "$2" --ttl 1d \
            --pair-url "http://127.0.0.1:510$3"
        done
        exit 0
      fi
      sleep 0.2
    done
    echo "the group did not elect a leader within 10 s; see $dir/node-*.log" >&2
    exit 1
    ;;
  status)
    "$bin" cluster --hub http://127.0.0.1:5101 --token "$(cat "$dir/admin.token")" status
    ;;
  stop)
    for n in 1 2 3; do
      [ -f "$dir/node-$n.pid" ] && kill "$(cat "$dir/node-$n.pid")" 2>/dev/null || true
      rm -f "$dir/node-$n.pid"
    done
    ;;
  *)
    echo "usage: $0 start|status|stop" >&2
    exit 2
    ;;
esac
