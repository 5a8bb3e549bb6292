#!/usr/bin/env bash
# The built-in default job: install what is missing, build a namespace lab, probe it with both
# engines, show the accept()/TIME_WAIT/SYN_RECV evidence, tear the lab down. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
. netns/setup.sh
require_root netns/demo.sh "it creates network namespaces"
need_commands ip:iproute2 nft:nftables
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[raw]'
PYTHONPATH=netns exec python3 -m synprobe_lab.demo
