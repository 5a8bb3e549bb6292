"""`import synprobe` and the shaker engine stay light: scapy is for the raw engine only."""

import os
import subprocess
import sys

CHECK = """
import sys
import synprobe
from synprobe.registry import create_engine
from synprobe.engines.base import ProbeOptions
create_engine("shaker", ProbeOptions())
import synprobe.cli
bad = sorted(m for m in sys.modules if m == "scapy" or m.startswith("scapy."))
print(",".join(bad))
"""


def test_import_and_shaker_do_not_load_scapy() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


RAW_CHECK = """
import sys
from synprobe.registry import create_engine
from synprobe.engines.base import ProbeOptions
from synprobe.model import Target
engine = create_engine("raw", ProbeOptions(source="127.0.0.1"))
print(engine.describe(Target("127.0.0.1", 80)).split(":")[0])  # builds a template with scapy
print("scapy.layers.inet" in sys.modules, "scapy.all" in sys.modules)
"""


def test_raw_engine_uses_scapy_layers_never_scapy_all(tmp_path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}  # a cold template cache
    cold = subprocess.run([sys.executable, "-c", RAW_CHECK], capture_output=True, text=True,
                          check=True, env=env).stdout.splitlines()
    assert cold[-1] == "True False"  # scapy built the template, from its layers only
    warm = subprocess.run([sys.executable, "-c", RAW_CHECK], capture_output=True, text=True,
                          check=True, env=env).stdout.splitlines()
    assert warm[-1] == "False False"  # the cached template: no scapy at all
    assert cold[0].startswith("IP 127.0.0.1.") and warm[0].startswith("IP 127.0.0.1.")


CLI_CHECK = """
import sys
import synprobe.cli.command, synprobe.engines.raw.engine, synprobe.engines.shaker
print(",".join(m for m in ("asyncio", "netaddr") if m in sys.modules))
"""


def test_a_cli_run_starts_without_asyncio_or_netaddr() -> None:
    """~20 ms and ~13 ms of every CLI start: the async API and an IPSet argument are the
    library's, never the command line's."""
    out = subprocess.run([sys.executable, "-c", CLI_CHECK], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


RAW_CLI_CHECK = """
import sys
from synprobe.cli.command import build_parser
from synprobe.cli.config import build_config
from synprobe.cli.workers import auto_workers
from synprobe.registry import create_engine
args = build_parser().parse_args(["--engine", "raw", "--json", "-p", "80", "198.18.0.0/24"])
config = build_config(args, auto_workers)
create_engine("raw", config.shares()[0].options)
from synprobe.wire.packets import syn_packet
syn_packet("198.18.0.1")  # what every run checks its cached template against
print(",".join(m for m in sys.argv[1:] if m in sys.modules))
"""
# What a raw CLI run without --via, --csv or a dry run never needs, each a millisecond or more
# of every start-up: argparse's terminal width (shutil, with zlib/bz2/lzma), OpenSSL (hashlib,
# secrets), a traceback, CSV, Unicode tables, ipaddress (templates come from their cache), and
# the modules behind checks through real servers and dry runs.
NOT_AT_START = ("shutil", "hashlib", "_hashlib", "secrets", "hmac", "traceback", "csv",
                "unicodedata", "ipaddress", "synprobe.engines.raw.via",
                "synprobe.kernel.neighbours", "synprobe.kernel.frames", "synprobe.wire.describe")


def test_a_raw_cli_start_loads_only_what_the_run_needs() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # this tree
    out = subprocess.run([sys.executable, "-c", RAW_CLI_CHECK, *NOT_AT_START],
                         capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == ""
