#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run them all (as root:
# the integration tests build network namespaces). Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

. netns/setup.sh
require_root tests/run.sh "the netns integration tests need it"
need_commands ip:iproute2 ss:iproute2 nft:nftables tcpdump:tcpdump capsh:libcap2-bin
# The drop-in tests run the real ones: /probe against blackbox_exporter and Prometheus, the
# external check under HAProxy (its admin socket read with socat).
need_commands haproxy:haproxy socat:socat prometheus:prometheus \
    prometheus-blackbox-exporter:prometheus-blackbox-exporter

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'

python3 -m ruff check src tests netns bench
# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
set +e
python3 -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "tests/run.sh: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
