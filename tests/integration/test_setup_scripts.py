"""The README's set-up commands, run the way a new user runs them on Debian 12: as root with a
bare environment (what `sudo` leaves: secure_path, so python3 is the system's, which is
externally managed, PEP 668). The scripts must make and use their own virtual environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
# What `sudo` or a root login shell leaves on Debian: no pyenv, no venv on PATH.
BARE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the set-up script tests need root; CI runs them as root")


def externally_managed() -> bool:
    found = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sysconfig; print(sysconfig."
                            "get_path('stdlib'))"], capture_output=True, text=True, check=True)
    return Path(found.stdout.strip(), "EXTERNALLY-MANAGED").exists()


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scripts") / "venv"


def test_run_sh_makes_its_own_venv_from_the_system_python(venv: Path, tmp_path: Path) -> None:
    require_root()
    assert SYSTEM_PYTHON.exists() and externally_managed(), "the case this test is about"
    done = subprocess.run(
        ["bash", "tests/run.sh", "-q", "-p", "no:cacheprovider", "tests/unit/test_model.py"],
        cwd=REPO, env={**BARE_ENV, "SYNPROBE_VENV": str(venv)}, capture_output=True, text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"creating the virtual environment {venv} (python3 is /usr/bin/python3)" in done.stderr
    assert f"using {venv}/bin/python" in done.stderr
    assert " passed" in done.stdout
    # The environment was made from the system python3, and that python3 was left alone.
    assert "home = /usr/bin" in (venv / "pyvenv.cfg").read_text()
    system = subprocess.run([str(SYSTEM_PYTHON), "-c", "import synprobe"], env=BARE_ENV,
                            cwd=tmp_path, capture_output=True, text=True)
    assert system.returncode != 0 and "No module named 'synprobe'" in system.stderr
    # A plain install brings the raw engine's scapy (no extra needed), and the lab runs from
    # any directory, not only netns/.
    check = subprocess.run(
        [str(venv / "bin/python"), "-c",
         "import importlib.metadata as m, synprobe_lab, scapy; "
         "print([r for r in m.requires('synprobe') if r.startswith('scapy')])"],
        cwd=tmp_path, env=BARE_ENV, capture_output=True, text=True, check=True,
    )
    assert "'scapy>=2.5'" in check.stdout  # also without an `extra == ...` marker
    lab = subprocess.run([str(venv / "bin/python"), "-m", "synprobe_lab", "--help"],
                         cwd=REPO, env=BARE_ENV, capture_output=True, text=True)
    assert lab.returncode == 0 and "usage: python -m synprobe_lab" in lab.stdout


def test_demo_sh_reuses_the_venv_and_shows_the_evidence(venv: Path) -> None:
    require_root()
    if not (venv / "bin/python").exists():
        pytest.fail("needs the venv the previous test made (run the module, not this test alone)")
    done = subprocess.run(["bash", "netns/demo.sh"], cwd=REPO,
                          env={**BARE_ENV, "SYNPROBE_VENV": str(venv)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.splitlines()[0] == f"using {venv}/bin/python"  # no second install
    evidence = "server accept() returned: 0 times   client TIME_WAIT: 0   server SYN_RECV: 0"
    assert done.stdout.count(evidence) == 2  # one sweep per engine
    assert done.stdout.rstrip().endswith("lab torn down.")


@pytest.mark.parametrize(("script", "why"), [
    ("tests/run.sh", "the netns integration tests need it"),
    ("netns/demo.sh", "it creates network namespaces"),
])
def test_scripts_ask_a_non_root_user_for_sudo(script: str, why: str) -> None:
    require_root()
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", script],
        cwd=REPO, env=BARE_ENV, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"{script}: run as root, or prefix it with sudo ({why})"]
