# Sourced by netns/demo.sh and tests/run.sh (run from the repository root):
#   require_root WHO WHY        refuse to run without root
#   need_commands CMD:PKG ...   install the Debian packages whose commands are missing
#   use_venv [EXTRAS]           make sure the project's virtual environment exists and holds this
#                               checkout (pip install -e ".[EXTRAS]"), then set $PY to its python
#
# The virtual environment is .venv/ in the repository ($SYNPROBE_VENV overrides it). It is made
# with the system python3's venv module: Debian's python3 is "externally managed" (PEP 668), so
# pip must never install into it, and `sudo` resets PATH to that python3 (secure_path).
require_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$1: run as root, or prefix it with sudo ($2)" >&2
    exit 2
  fi
}

_apt_install() {
  echo "installing Debian packages: $*" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

need_commands() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    _apt_install "${need[@]}"
  fi
}

use_venv() {
  local extras="${1:-}" venv="${SYNPROBE_VENV:-$PWD/.venv}" spec=. stamp want have have_extras
  if [ -n "$extras" ]; then spec=".[$extras]"; fi
  command -v python3 >/dev/null || _apt_install python3
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "synprobe needs Python 3.11 or later; python3 is $(python3 -V 2>&1)" >&2
    exit 2
  fi
  # Made again when missing or broken (its python gone, or pip missing after an interrupted run).
  if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    # Debian splits ensurepip (which venv needs to put pip in) into python3-venv.
    python3 -c 'import ensurepip, venv' 2>/dev/null || _apt_install python3-venv
    echo "creating the virtual environment $venv (python3 is $(command -v python3))" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  # Reinstall only when the project's metadata changed since the last install, or when extras
  # are asked for that it did not include (the demo needs none; the tests need "test").
  want="$(cksum < pyproject.toml | cut -d' ' -f1) $extras"
  stamp="$venv/.synprobe-installed"
  have= have_extras=
  if [ -f "$stamp" ]; then read -r have have_extras < "$stamp" || true; fi
  if [ "$have" != "${want%% *}" ] || { [ -n "$extras" ] && [ "$have_extras" != "$extras" ]; }; then
    echo "installing synprobe ($spec, editable) into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
    printf '%s\n' "$want" > "$stamp"
  fi
  # The lab (netns/synprobe_lab) is not part of the package; a path file puts it on this
  # environment's import path, so `.venv/bin/python -m synprobe_lab` works from any directory.
  "$venv/bin/python" - "$PWD/netns" <<'EOF'
import pathlib, sys, sysconfig
pathlib.Path(sysconfig.get_path("purelib"), "synprobe_lab.pth").write_text(sys.argv[1] + "\n")
EOF
  PY="$venv/bin/python"
  echo "using $PY" >&2
}
