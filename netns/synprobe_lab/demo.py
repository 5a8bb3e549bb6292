"""The built-in default job: build a lab, probe it with both engines, show the proof, tear down.

Run as root: `bash netns/demo.sh` (installs what is missing first), or
`PYTHONPATH=netns python3 -m synprobe_lab.demo`.
"""

from __future__ import annotations

import subprocess
import sys

from synprobe_lab import CLOSED_PORT, FILTERED_PORT, OPEN_PORT, REJECT_PORT, Lab

SWEEP = "198.19.0.0/22"  # 1,024 AnyIP addresses on the server, every one listening on port 80


def targets(lab: Lab) -> list[str]:
    out = []
    for fam in lab.families:
        host = f"[{fam.server}]" if ":" in fam.server else fam.server
        out += [f"{host}:{p}" for p in (OPEN_PORT, CLOSED_PORT, FILTERED_PORT, REJECT_PORT)]
        unreachable = f"[{fam.unreachable}]" if ":" in fam.unreachable else fam.unreachable
        out.append(f"{unreachable}:{OPEN_PORT}")
    return out


def synprobe(lab: Lab, *args: str, show: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "synprobe", "--timeout", "0.3", *args]
    print(f"\n$ ip netns exec {lab.client} synprobe {' '.join(args)}", flush=True)
    result = lab.exec("client", argv, check=False, timeout=120)
    if show:
        sys.stdout.write(result.stdout)
    sys.stdout.write(result.stderr)
    print(f"(exit status {result.returncode})")
    return result


def evidence(lab: Lab) -> None:
    lab.wait_for(lambda: lab.count_states("server", "syn-recv") == 0, timeout=2.0,
                 what="the server's half-open entries to go")
    print(f"  server accept() returned: {lab.accept_count()} times   "
          f"client TIME_WAIT: {lab.count_states('client', 'time-wait')}   "
          f"server SYN_RECV: {lab.count_states('server', 'syn-recv')}")


def main() -> int:
    with Lab() as lab:
        print(f"lab up: client ns {lab.client} ({lab.v4.client}, {lab.v6.client}), "
              f"server ns {lab.server} ({lab.v4.server}, {lab.v6.server}); "
              f"port {OPEN_PORT} open, {CLOSED_PORT} closed, {FILTERED_PORT} filtered, "
              f"{REJECT_PORT} rejected with ICMP")
        failed = False
        for engine in ("shaker", "raw"):
            synprobe(lab, "--engine", engine, *targets(lab))
            sweep = synprobe(lab, "--engine", engine, "--json", "-p", str(OPEN_PORT), SWEEP,
                             show=False)
            opened = sweep.stdout.count('"state":"open"')
            print(f"  {SWEEP} sweep: {opened:,} of 1,024 open")
            evidence(lab)
            failed |= opened != 1024 or lab.accept_count() != 0
        print("\nlab torn down.")
        return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
