"""`python -m synprobe_lab`: bring the lab up for manual work, tear it down on Enter or Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from .dsr import dsr_down_all
from .lab import Lab
from .nsutil import DEFAULT_PREFIX, lab_down_all
from .topology import CLOSED_PORT, FILTERED_PORT, OPEN_PORT, REJECT_PORT


def describe(lab: Lab) -> str:
    lines = [
        f"client namespace  {lab.client}  ({lab.client_if})",
        f"server namespace  {lab.server}  ({lab.server_if}), listener pid {lab.listener_pid}",
        f"ports: open {OPEN_PORT}, closed {CLOSED_PORT}, filtered {FILTERED_PORT}, "
        f"icmp-reject {REJECT_PORT}; loss {lab.loss_percent}% each way",
    ]
    for fam in lab.families:
        lines += [
            f"{fam.name}: client {fam.client}  server {fam.server}  AnyIP {fam.anyip_net} "
            f"(e.g. {fam.anyip_sample})",
            f"    unreachable {fam.unreachable} (nft, unlimited)  "
            f"unreachable_route {fam.unreachable_route} (kernel route)",
        ]
    target = f"/dev/tcp/{lab.v4.anyip_sample}/{OPEN_PORT}"
    lines.append(f"try: ip netns exec {lab.client} bash -c 'echo > {target}'")
    return "\n".join(lines)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synprobe_lab", description=__doc__)
    parser.add_argument("--loss", type=float, default=0.0, help="random TCP loss %% each way")
    parser.add_argument("--close", choices=("wait", "rst", "fin"), default="wait",
                        help="what the listener does with accepted connections")
    parser.add_argument("--down-all", action="store_true",
                        help="only remove leftover lab namespaces of dead processes, then exit")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="namespace name prefix")
    args = parser.parse_args(argv)

    if args.down_all:
        for name in [*lab_down_all(args.prefix), *dsr_down_all(args.prefix)]:
            print(f"removed {name}")
        return 0

    # SIGTERM takes the same path as Ctrl-C, so `kill PID` also tears the lab down.
    signal.signal(signal.SIGTERM, _interrupt)
    with Lab(prefix=args.prefix, loss_percent=args.loss, close_mode=args.close) as lab:
        print(describe(lab))
        print("ready: press Enter (or Ctrl-C) to tear down", flush=True)
        try:
            if sys.stdin.readline() == "":  # no terminal (EOF): wait for a signal instead
                signal.pause()
        except KeyboardInterrupt:
            pass
        print("tearing down", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
