"""How fast the simulator runs: a simulated hour at 1,000 requests/s on one core (target: <= 5 s).

    python -m bench.autoscaling.speed            # 3 runs, prints the table, rewrites the figures in
                                                 # docs/benchmarks/simulator.md
    python -m bench.autoscaling.speed --quick    # 1 simulated minute, no report (what the tests run)

The workload: half single queries (1 input, 8-64 tokens), half documents (1-8 inputs of 128-512 tokens; ~740 tokens per request on average), Poisson
at 1,000 requests/s, on a static fleet of 20 bge-m3-a100 replicas, with the view read every 15 s as a policy
would (a metrics page per pod and a Prometheus rate), plus 16 closed-loop bulk workers. "On one core" is the
process's CPU time (the simulator is single-threaded); wall time on a shared machine is printed too. The baseline is the
pure-Python reference model of the same batching rules (`batching.ReplicaModel`) on one replica's share of the
same load for one simulated minute, scaled to the hour: what the per-request loop costs without the compiled kernel.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import numpy as np

from tei_operator.emulator.batching import ReplicaModel, load_profile

from . import kernel as K
from .simulator import BulkClients, OpenArrivals, Simulator

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "docs" / "benchmarks" / "simulator.md"
START, END = "<!-- speed -->", "<!-- /speed -->"
RATE = 1000.0
REPLICAS = 20


def workload(seconds: float, seed: int = 0, rate: float = RATE) -> OpenArrivals:
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rate * seconds))
    t = np.sort(rng.uniform(0.0, seconds, n))
    query = rng.random(n) < 0.5
    inputs = np.where(query, 1, rng.integers(1, 9, n))
    offsets = np.concatenate(([0], np.cumsum(inputs)))
    total = int(offsets[-1])
    tokens = rng.integers(128, 513, total)
    first = offsets[:-1]
    tokens[first[query]] = rng.integers(8, 65, int(query.sum()))
    return OpenArrivals(t, np.where(query, 0, 1).astype(np.int8), offsets, tokens, np.full(n, -1))


def run_simulator(seconds: float, arrivals: OpenArrivals) -> tuple[float, float, int]:
    """CPU seconds and wall seconds to simulate `seconds` (policy-style reads every 15 s), and the batches formed."""
    sim = Simulator(load_profile("bge-m3-a100"), replicas0=REPLICAS, seed=0, arrivals=arrivals,
                    bulk=BulkClients(workers=16, start_s=0.0, stop_s=seconds, inputs_per_request=32))
    started, cpu_started = time.perf_counter(), time.process_time()
    for now in np.arange(15.0, seconds + 15.0, 15.0):
        sim.advance_to(float(now))
        for pod in sim.view.pods():
            if pod.phase == "Ready":
                sim.view.metrics_page(pod.id)
        sim.view.prometheus.rate("te_request_count", 60.0)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    res = sim.results()
    assert (res.status == 200).mean() > 0.98, "the fleet should serve this load"
    batches = int(sim._pc[:, K.C_BATCHES].sum())
    return cpu, elapsed, batches


def run_reference(seconds: float, arrivals: OpenArrivals) -> float:
    """Wall time of the pure-Python reference on one replica's share (1/REPLICAS) of the load."""
    model = ReplicaModel(load_profile("bge-m3-a100"))
    rng = np.random.default_rng(1)
    mine = np.nonzero(rng.random(arrivals.n) < 1.0 / REPLICAS)[0]
    mine = mine[arrivals.t[mine] < seconds]
    started = time.process_time()
    for i in mine:
        t = float(arrivals.t[i])
        while model.busy_until <= t:
            model.finish(model.busy_until)
        model.arrive(t, arrivals.input_tokens[arrivals.input_offsets[i]:arrivals.input_offsets[i + 1]].tolist())
    while model.busy_until < float("inf"):
        model.finish(model.busy_until)
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.autoscaling.speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs to take the median of (default 3)")
    ap.add_argument("--quick", action="store_true", help="one simulated minute, one run, no report")
    ap.add_argument("--no-report", action="store_true", help=f"print only; do not rewrite {REPORT.name}")
    args = ap.parse_args(argv)
    seconds = 60.0 if args.quick else 3600.0
    runs = 1 if args.quick else max(1, args.runs)

    t0 = time.perf_counter()
    warm = workload(30.0, seed=99)
    run_simulator(30.0, warm)  # compiles the kernel (or loads it from numba's cache)
    compile_s = time.perf_counter() - t0
    arrivals = workload(seconds)
    sim_times, wall_times, batches = [], [], 0
    for _ in range(runs):
        cpu, wall, batches = run_simulator(seconds, arrivals)
        sim_times.append(cpu)
        wall_times.append(wall)
    ref_minute = statistics.median([run_reference(60.0, arrivals) for _ in range(runs)])
    ref_hour = ref_minute * REPLICAS * seconds / 60.0
    sim_s = statistics.median(sim_times)
    rows = [
        ("simulated time", f"{seconds:.0f} s"),
        ("requests (open loop)", f"{arrivals.n:,}"),
        ("inputs", f"{len(arrivals.input_tokens):,}"),
        ("mean tokens per request", f"{arrivals.tokens_per_request().mean():.0f}"),
        ("batches formed", f"{batches:,}"),
        ("simulator CPU time, one core (median)", f"{sim_s:.2f} s (runs: {', '.join(f'{x:.2f}' for x in sim_times)})"),
        ("simulator wall time (median; shared machine)", f"{statistics.median(wall_times):.2f} s"),
        ("kernel compile or cache load, first run", f"{compile_s:.1f} s"),
        ("pure-Python reference, CPU, same load (scaled)", f"{ref_hour:.0f} s"),
        ("speed-up over the reference", f"{ref_hour / sim_s:.0f}x"),
    ]
    width = max(len(k) for k, _ in rows)
    table = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    print(table)
    if not (args.quick or args.no_report):
        md = "\n".join(["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])
        md += f"\n\nReproduce: `python -m bench.autoscaling.speed --runs {runs}` (one core; 2-core shared machine)."
        text = REPORT.read_text()
        block = f"{START}\n{md}\n{END}"
        if START not in text:
            raise SystemExit(f"{REPORT}: no {START} ... {END} block to fill")
        REPORT.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _m: block, text, flags=re.S))
        print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
