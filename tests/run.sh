#!/usr/bin/env bash
# Run every test (ruff, then pytest: unit and netns integration) on a Debian machine, as root (the
# integration tests build network namespaces). Installs what is missing first: Debian packages
# with apt, and synprobe with its test extras into the virtual environment .venv/ in the
# repository (never into the system Python). Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

. netns/setup.sh
require_root tests/run.sh "the netns integration tests need it"
need_commands ip:iproute2 ss:iproute2 nft:nftables tcpdump:tcpdump capsh:libcap2-bin
# The service tests run the real ones: Prometheus scraping synprobe watch and /probe, beside
# blackbox_exporter; the external check under HAProxy (its admin socket read with socat); the
# live view in tmux.
need_commands haproxy:haproxy socat:socat prometheus:prometheus tmux:tmux \
    prometheus-blackbox-exporter:prometheus-blackbox-exporter
use_venv test

"$PY" -m ruff check src tests netns bench
# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
set +e
"$PY" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "tests/run.sh: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
