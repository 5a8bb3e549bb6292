#!/usr/bin/env bash
# The built-in default job: install what is missing, build a namespace lab, probe it with both
# engines, show the accept()/TIME_WAIT/SYN_RECV evidence, tear the lab down. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "netns/demo.sh: run as root (it creates network namespaces)" >&2
  exit 2
fi
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[raw]'
PYTHONPATH=netns exec python3 -m synprobe_lab.demo
