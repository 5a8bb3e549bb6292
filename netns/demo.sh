#!/usr/bin/env bash
# The built-in default job: build a namespace lab, probe it with both engines, show the
# accept()/TIME_WAIT/SYN_RECV evidence, tear the lab down. Run as root (it creates network
# namespaces). Installs what is missing first: Debian packages with apt, and synprobe into the
# virtual environment .venv/ in the repository (never into the system Python).
set -euo pipefail
cd "$(dirname "$0")/.."
. netns/setup.sh
require_root netns/demo.sh "it creates network namespaces"
need_commands ip:iproute2 nft:nftables
use_venv
exec "$PY" -m synprobe_lab.demo
