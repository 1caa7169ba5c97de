"""The table and the Markdown report of bench/scale (pure: tests feed them results)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from .run import RunResult

SCALARS = ("raw_seconds", "operator_seconds", "applies_per_child", "create_writes", "create_reads", "settled_writes",
           "settled_client_writes", "settled_seconds", "idle_writes",
           "idle_reads", "lease_requests_per_minute", "rss_mib", "cpu_seconds_per_minute", "tick_seconds",
           "queries_per_tick", "pod_reads_per_minute", "cpu_seconds_per_minute_no_fast", "fast_pod_reads_per_minute",
           "gc_seconds_per_minute", "gc_seconds_per_minute_no_fast", "reconciles_per_minute",
           "reconciles_per_minute_no_fast")


def median(results: Sequence[RunResult], name: str) -> float:
    values = [getattr(r, name) for r in results if not math.isnan(getattr(r, name))]
    return statistics.median(values) if values else float("nan")


def by_size(results: Sequence[RunResult]) -> dict[int, list[RunResult]]:
    out: dict[int, list[RunResult]] = {}
    for r in results:
        out.setdefault(r.n, []).append(r)
    return dict(sorted(out.items()))


def _f(x: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def table(results: Sequence[RunResult]) -> str:
    """One row per N: medians over its runs."""
    lines = ["| N | runs | raw client -> Ready (s) | operator -> Ready (s) | ratio | applies per child | "
             "writes / service (create) | reads / service (create) | writes / service (to settled) | "
             "writes / service / idle min | "
             "reads / service / idle min | RSS (MiB) | CPU-s / idle min | tick (s) | Prometheus queries / tick |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, runs in by_size(results).items():
        raw, op = median(runs, "raw_seconds"), median(runs, "operator_seconds")
        lines.append(
            f"| {n} | {len(runs)} | {raw:.1f} | {op:.1f} | {op / raw:.2f} | {_f(median(runs, 'applies_per_child'))} | "
            f"{_f(median(runs, 'create_writes'), 1)} | {_f(median(runs, 'create_reads'), 1)} | "
            f"{_f(median(runs, 'settled_writes'), 1)} | {_f(median(runs, 'idle_writes'), 3)} | {_f(median(runs, 'idle_reads'), 3)} | "
            f"{median(runs, 'rss_mib'):.0f} | {_f(median(runs, 'cpu_seconds_per_minute'))} | "
            f"{_f(median(runs, 'tick_seconds'), 3)} | {_f(median(runs, 'queries_per_tick'), 1)} |")
    return "\n".join(lines)


def fast_path_cost(results: Sequence[RunResult]) -> str:
    """Per N: idle CPU with the fast scale-up path on and off (the same window length, a second operator process),
    the difference, and that per fast-path pod read; of each window, the garbage collector's CPU and the reconciles
    run (at rest only the resync's full passes, ~N / 10 a minute; more: the operator was still working through its
    start). Empty when no run measured it."""
    rows = []
    for n, runs in by_size(results).items():
        off = median(runs, "cpu_seconds_per_minute_no_fast")
        if math.isnan(off):
            continue
        on, reads = median(runs, "cpu_seconds_per_minute"), median(runs, "fast_pod_reads_per_minute")
        per_read = (on - off) / reads * 1000 if reads and reads > 0 else float("nan")
        rows.append(f"| {n} | {_f(on)} | {_f(off)} | {_f(on - off)} | {reads:.0f} | {_f(per_read, 3)} | "
                    f"{_f(median(runs, 'gc_seconds_per_minute'))} | {_f(median(runs, 'gc_seconds_per_minute_no_fast'))} | "
                    f"{_f(median(runs, 'reconciles_per_minute'), 0)} | "
                    f"{_f(median(runs, 'reconciles_per_minute_no_fast'), 0)} |")
    if not rows:
        return ""
    return "\n".join(["| N | CPU-s / idle min, fast path on | off | the fast path | its pod reads / min | "
                      "CPU-ms per pod read | garbage collector CPU-s / min, on | off | reconciles / min, on | off |",
                      "|---|---|---|---|---|---|---|---|---|---|", *rows])


def breakdown(result: RunResult, which: str, floor: float = 0.05) -> str:
    """The requests of one run by verb and resource (`create`: per created service; `idle`: per service per idle
    minute), rows under `floor` left out."""
    rows = sorted(((v, r, x) for (v, r), x in getattr(result, which).items() if abs(x) >= floor),
                  key=lambda t: (-abs(t[2]), t[0], t[1]))
    unit = "per created service" if which == "create" else "per service per idle minute"
    lines = [f"| verb | resource | {unit} |", "|---|---|---|"]
    lines += [f"| {v} | {r} | {x:.3f} |" for v, r, x in rows] or ["| (none) | | |"]
    return "\n".join(lines)


def goals(results: Sequence[RunResult]) -> str:
    """The issue's goals at the largest N measured, and what was measured there."""
    sizes = by_size(results)
    n_max = max(sizes)
    runs = sizes[n_max]
    raw, op = median(runs, "raw_seconds"), median(runs, "operator_seconds")
    rows = [
        ("time to all Ready <= 1.1x the raw client", f"{op / raw:.2f}x ({op:.0f} s vs {raw:.0f} s)",
         op / raw <= 1.1),
        ("<= 1.5 applies per child while creating", _f(median(runs, "applies_per_child")),
         median(runs, "applies_per_child") <= 1.5),
        ("0 writes per service per idle minute", _f(median(runs, "idle_writes"), 3),
         median(runs, "idle_writes") <= 0.005),
        ("<= 0.05 reads per service per idle minute", _f(median(runs, "idle_reads"), 3),
         median(runs, "idle_reads") <= 0.05),
        ("RSS <= 200 MiB", f"{median(runs, 'rss_mib'):.0f} MiB", median(runs, "rss_mib") <= 200),
        ("idle CPU <= 2 CPU-seconds per minute", _f(median(runs, "cpu_seconds_per_minute")),
         median(runs, "cpu_seconds_per_minute") <= 2),
        ("one tick <= 1 s", f"{_f(median(runs, 'tick_seconds'), 3)} s", median(runs, "tick_seconds") <= 1),
        ("one Prometheus query per signal for all services (not per service)",
         f"{_f(median(runs, 'queries_per_tick'), 1)} queries per tick for {n_max // 2} autoscaled services",
         median(runs, "queries_per_tick") < n_max / 2),
    ]
    if len(sizes) > 1:
        n_min = min(sizes)
        small = sizes[n_min]

        def growth(name: str) -> float:
            a, b = median(small, name), median(runs, name)
            return b / a if a else float("nan")
        per_svc_time = (op / n_max) / (median(small, "operator_seconds") / n_min)
        cpu_growth = (median(runs, "cpu_seconds_per_minute") / n_max) / (
            median(small, "cpu_seconds_per_minute") / n_min)
        # Writes per created service: all that creating caused (to the settle) where measured. The creating phase
        # alone is 10x longer at 10x the services, so it holds more of each service's later writes (the cost
        # status's first rate a minute after Ready, the autoscaler's first metrics): bounded by it, the small N
        # reads cheaper for a reason that is not the operator's.
        settled = not math.isnan(growth("settled_writes"))
        writes_growth = growth("settled_writes") if settled else growth("create_writes")
        rows.append((f"cost growing linearly or better from {n_min} to {n_max}",
                     f"per service at {n_max} / at {n_min}: time to Ready {per_svc_time:.2f}, writes "
                     + (f"{_f(growth('settled_writes'))} from the apply to the settle "
                        f"({_f(growth('create_writes'))} within the creating phase), " if settled else
                        f"{_f(growth('create_writes'))} within the creating phase, ")
                     + f"reads {_f(growth('create_reads'))}, idle CPU {_f(cpu_growth)}",
                     per_svc_time <= 1.1 and writes_growth <= 1.1))
    lines = [f"| goal (at N = {n_max}) | measured | met |", "|---|---|---|"]
    lines += [f"| {g} | {m} | {'yes' if ok else '**no**'} |" for g, m, ok in rows]
    return "\n".join(lines)
