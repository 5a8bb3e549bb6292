# Sourced by netns/demo.sh and tests/run.sh: refuse to run without root, and install the Debian
# packages whose commands are missing. Usage: require_root WHO WHY; need_commands CMD:PKG ...
require_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$1: run as root ($2)" >&2
    exit 2
  fi
}

need_commands() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}
