"""`python -m bench.autoscaling.tail_curve`: how the share of queries over 100 ms grows with the load per replica, on
a static fleet of online query replicas (random routing) at a constant rate, Poisson (CV 1) and bursty (CV 2)
arrivals. The latency capacity's probe reads how far a window was from late with this growth
(`policy.LATENCY_TAIL_ELASTICITY`, docs/autoscaling.md step 13 "How far a probe goes"): the last column is the
exponent k of late share ~ load^k between a row and the one before.

    python -m bench.autoscaling.tail_curve                 # 4 replicas, 50-110 queries/s each, 900 s per point
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from .classes import QUERY_CLASS
from .policies import Static
from .run import ONLINE, load_bench_profile, simulate
from .traces import load_trace
from .workload import make_workload

MEAN_QUERY_TOKENS = (QUERY_CLASS.tokens_min + QUERY_CLASS.tokens_max) / 2


def late_share(per_replica_qps: float, cv: float, replicas: int = 4, seconds: float = 900.0, seed: int = 7) -> float:
    """Share of queries over their SLO on `replicas` static replicas at `per_replica_qps` queries/s each."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "constant.csv"
        rate = per_replica_qps * replicas
        path.write_text(f"time_s,query_rps,cv\n0,{rate},{cv}\n{seconds},{rate},{cv}\n")
        trace = load_trace(path)
    r = simulate(Static("static", replicas), trace, make_workload(trace, seed), ONLINE, load_bench_profile(), seed)
    return 1.0 - r.query_attainment


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.autoscaling.tail_curve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", default="50,60,70,80,90,100,110", help="queries/s per replica, comma-separated")
    ap.add_argument("--cvs", default="1,2", help="inter-arrival CVs, comma-separated")
    ap.add_argument("--seconds", type=float, default=900.0)
    args = ap.parse_args(argv)
    try:
        loads = [float(x) for x in args.loads.split(",")]
        cvs = [float(x) for x in args.cvs.split(",")]
    except ValueError as e:
        ap.error(f"--loads/--cvs: comma-separated numbers ({e})")
    if any(x <= 0 for x in loads + cvs) or args.seconds <= 0:
        ap.error("--loads, --cvs, --seconds: must be > 0")
    print(f"{'cv':>3} {'queries/s/replica':>17} {'tokens/s/replica':>16} {'late':>7} {'exponent':>8}")
    for cv in cvs:
        prev = None
        for q in loads:
            late = late_share(q, cv, seconds=args.seconds)
            k = (math.log(late / prev[1]) / math.log(q / prev[0])
                 if prev and prev[1] > 0 and late > 0 else math.nan)
            print(f"{cv:3.0f} {q:17.0f} {q * MEAN_QUERY_TOKENS:16.0f} {100 * late:6.2f}% "
                  f"{'' if math.isnan(k) else f'{k:8.1f}'}", flush=True)
            prev = (q, late)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
