"""`import synprobe` (which exports Watcher) loads neither aiohttp nor prometheus-client: only
the service's HTTP listener needs them."""

import subprocess
import sys

CHECK = """
import sys
import synprobe
synprobe.Watcher
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("aiohttp", "prometheus_client"))
print(",".join(heavy))
"""


def test_library_import_stays_light() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
