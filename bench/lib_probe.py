"""The library path of the benchmark: `synprobe.probe_many()` over a TargetSpace, counting opens.

    python3 bench/lib_probe.py --engine shaker 198.19.0.0/16 -p 80

Uses the defaults a library caller gets (concurrency 1000, timeout 0.5 s, one retry, no rate
limit) and prints one JSON object: {"targets", "opens", "states", "stats"}. Exit 0 when the run
finished (whatever the states), 3 when the engine could not run (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import synprobe
from synprobe.targets.build import build_space
from synprobe.targets.tokens import parse_ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--engine", default="shaker")
    parser.add_argument("-p", "--ports", default="80")
    args = parser.parse_args(argv)
    space = build_space(args.targets, parse_ports(args.ports))
    states: Counter[str] = Counter()
    try:
        with synprobe.probe_many(space, engine=args.engine) as results:
            for result in results:
                states[result.state.value] += 1
            stats = results.stats()
    except (synprobe.SynprobeError, OSError) as exc:
        print(f"lib_probe: {args.engine}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    json.dump({"targets": len(space), "opens": states["open"], "states": dict(states),
               "stats": stats}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
