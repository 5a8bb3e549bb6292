"""`import synprobe` and the shaker engine stay light: scapy is for the raw engine only."""

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
