"""The operator's memory before it watches anything: `python -m bench.scale.footprint`.

Imports what `tei-operator run` imports (in a fresh interpreter per step) and prints the resident set after each
step, and the packages with the most modules loaded; the scale report's RSS is this baseline plus what the
services cost (docs/install.md, "The operator's own memory")."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

STEPS = ["aiohttp", "pydantic", "kopf", "tei_operator.controller.runner", "tei_operator.autoscaling.loop"]
CLIENTS = ("kubernetes", "kubernetes_asyncio", "pykube")  # kopf imports whichever of these is installed

_PROBE = """
import importlib, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
for name in sys.argv[1:]:
    importlib.import_module(name)
    print(name, round(rss(), 1), len(sys.modules))
"""


def import_steps() -> list[tuple[str, float, int]]:
    """(module, RSS in MiB after importing it and the ones before, modules loaded), measured in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _PROBE, *STEPS], capture_output=True, text=True, check=True).stdout
    return [(name, float(rss), int(modules)) for name, rss, modules in (line.split() for line in out.splitlines())]


def baseline_mib() -> float:
    """The operator's RSS once it has imported everything `tei-operator run` imports, before it watches anything."""
    return import_steps()[-1][1]


def main() -> int:
    print("| import (cumulative) | RSS (MiB) | modules |\n|---|---|---|")
    for name, rss, modules in import_steps():
        print(f"| {name} | {rss:.0f} | {modules} |")
    for step in STEPS:
        __import__(step)
    top = Counter(name.split(".")[0] for name in sys.modules).most_common(6)
    print("\nmodules by package: " + ", ".join(f"{name} {count}" for name, count in top))
    loaded = [name for name in CLIENTS if name in sys.modules]
    print("Kubernetes client packages kopf imported (none needed: the operator reads its own credentials): "
          + (", ".join(loaded) if loaded else "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
