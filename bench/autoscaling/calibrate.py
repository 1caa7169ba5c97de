"""Calibration: the simulator against the TEI emulator (real HTTP, real batching loop in real time), same profile.

    python -m bench.autoscaling.calibrate             # 3 loads x 30 s, prints the table, fills docs/benchmarks/simulator.md
    python -m bench.autoscaling.calibrate --seconds 10 --no-report

For each load (a share of the profile's capacity), the load generator drives an in-process emulator with Poisson
arrivals of identical requests; the simulator then replays the very send times the load generator recorded, with
the same request sizes, on one replica of the same profile. Compared: throughput (answered requests per second of
sending), p50 and p99 latency of answered requests. Replaying the same arrivals removes sampling noise from the
comparison, so what differs is the model.

The simulator models TEI's router, not HTTP: the emulator's answers also carry the client's and the server's HTTP,
JSON and event-loop time (a few milliseconds on a busy 2-core machine). That is measured in the same run, as the
median latency beyond the modelled batch time of an emulator whose every batch takes 20 ms (same requests, same
client), and added to the simulator's latencies; the table shows it, and the errors without it.

The profile is `cpu-small` (batches of tens of milliseconds), so the emulator's asyncio timing is accurate on a
busy machine; tests/unit/test_calibration.py runs this with short runs and requires agreement within 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tei_operator.emulator.batching import Profile, load_profile
from tei_operator.emulator.config import EmulatorConfig
from tei_operator.emulator.fake_model import count_tokens
from tei_operator.emulator.loadgen import make_texts, run_load
from tei_operator.emulator.server import EmulatorServer

from .simulator import OpenArrivals, Simulator

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "docs" / "benchmarks" / "simulator.md"
START, END = "<!-- calibration -->", "<!-- /calibration -->"
PROFILE = "cpu-small"
INPUTS_PER_REQUEST = 1
WORDS_PER_INPUT = 100
LOADS = (0.3, 0.6, 0.85)


@dataclass
class Side:
    throughput: float
    p50: float
    p99: float
    answered: int


@dataclass
class Point:
    load: float
    rate: float
    emulator: Side
    simulator: Side
    http_s: float = 0.0
    """Median HTTP round trip of a request whose batch costs nothing, added to the simulator's latencies."""
    per_request: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """10th, 50th and 90th percentile of (emulator - simulator) latency of the same request: a few ms when both
    formed the same batches, a batch time or more when they did not."""

    def errors(self, with_http: bool = True) -> dict[str, float]:
        """Relative difference of the simulator (plus the HTTP round trip) from the emulator, per measure."""
        add = self.http_s if with_http else 0.0
        return {"throughput": self.simulator.throughput / self.emulator.throughput - 1.0,
                "p50": (self.simulator.p50 + add) / self.emulator.p50 - 1.0,
                "p99": (self.simulator.p99 + add) / self.emulator.p99 - 1.0}


def input_tokens() -> int:
    """Tokens per input of the load generator's texts, as the emulator counts them."""
    return count_tokens(" ".join(["word"] * WORDS_PER_INPUT))


def capacity(profile: Profile) -> float:
    """Requests/s one replica answers when every batch is full (the load generator's requests)."""
    per_input = input_tokens()
    inputs = profile.full_batch_inputs(per_input)
    requests = inputs // INPUTS_PER_REQUEST
    tokens = requests * INPUTS_PER_REQUEST * per_input
    return requests / profile.batch_seconds(tokens, requests * INPUTS_PER_REQUEST * per_input * per_input)


def _nearest_rank(values: np.ndarray, q: float) -> float:
    ordered = np.sort(values)
    return float(ordered[max(1, math.ceil(q * len(ordered))) - 1])


async def _emulate(profile: Profile, rate: float, seconds: float, seed: int) -> list[tuple[float, float | None, str]]:
    config = EmulatorConfig.from_profile(profile, port=0, dimensions=8)
    async with EmulatorServer(config) as server:
        summary = await run_load(server.url, rate, seconds, inputs_per_request=INPUTS_PER_REQUEST,
                                 words_per_input=WORDS_PER_INPUT, seed=seed, timeout=30.0)
    return summary.requests


#: The batch time of the emulator that measures the HTTP round trip: long enough that the emulator sleeps through it
#: as it does in the calibration (its wake-up lateness is part of what is measured), short enough that requests
#: rarely meet.
PROBE_BATCH_S = 0.02


def http_round_trip(profile: Profile, seconds: float = 4.0, rate: float = 5.0, seed: int = 0) -> float:
    """The part of an emulator's answer that is not its modelled batch: median latency of the calibration's requests
    against an emulator whose every batch takes exactly PROBE_BATCH_S, minus PROBE_BATCH_S. That is HTTP, JSON and
    the event loop's lateness, which the simulator does not model."""
    probe = profile.with_limits(overhead_s=PROBE_BATCH_S, seconds_per_token=1e-12, seconds_per_token_sq=0.0)
    records = asyncio.run(_emulate(probe, rate, seconds, seed))
    return float(np.median([r[1] for r in records if r[1] is not None])) - PROBE_BATCH_S


def measure_point(profile: Profile, load: float, seconds: float, seed: int = 0, http_s: float = 0.0) -> Point:
    rate = load * capacity(profile)
    records = sorted(asyncio.run(_emulate(profile, rate, seconds, seed)))
    sent = np.array([r[0] for r in records])
    ok = [r for r in records if r[2] == "200" and r[1] is not None]
    if len(ok) < len(records):
        raise RuntimeError(f"load {load:.0%}: the emulator answered {len(ok)} of {len(records)} requests with 200")
    lat_emu = np.array([r[1] for r in ok])
    span = seconds
    emulator = Side(len(ok) / span, _nearest_rank(lat_emu, 0.5), _nearest_rank(lat_emu, 0.99), len(ok))

    # every text of the load generator's pool has WORDS_PER_INPUT words, so every input the same tokens
    assert {count_tokens(t) for t in make_texts(random.Random(seed), 8, WORDS_PER_INPUT)} == {input_tokens()}
    arrivals = OpenArrivals.uniform_sizes(sent, INPUTS_PER_REQUEST, input_tokens())
    sim = Simulator(profile, replicas0=1, seed=seed, arrivals=arrivals)
    sim.advance_to(float(sent[-1]) + 60.0)
    res = sim.results()
    good = res.status == 200
    lat_sim = (res.done - res.t)[good]
    simulator = Side(int(good.sum()) / span, _nearest_rank(lat_sim, 0.5), _nearest_rank(lat_sim, 0.99),
                     int(good.sum()))
    diff = np.array([r[1] for r in records]) - (res.done - res.t)
    per_request = tuple(float(x) for x in np.percentile(diff, [10, 50, 90]))
    return Point(load, rate, emulator, simulator, http_s, per_request)


def table(points: list[Point]) -> list[tuple[str, ...]]:
    rows = [("load", "req/s", "requests", "throughput emu / sim", "p50 ms emu / sim", "p99 ms emu / sim",
             "HTTP ms", "error thr", "error p50", "error p99", "p50, p99 without HTTP",
             "emu - sim per request ms (p10, p50, p90)")]
    for p in points:
        e, raw = p.errors(), p.errors(with_http=False)
        rows.append((f"{p.load:.0%}", f"{p.rate:.1f}", str(p.emulator.answered),
                     f"{p.emulator.throughput:.2f} / {p.simulator.throughput:.2f}",
                     f"{p.emulator.p50 * 1000:.1f} / {p.simulator.p50 * 1000:.1f}",
                     f"{p.emulator.p99 * 1000:.1f} / {p.simulator.p99 * 1000:.1f}", f"{p.http_s * 1000:.1f}",
                     f"{e['throughput']:+.1%}", f"{e['p50']:+.1%}", f"{e['p99']:+.1%}",
                     f"{raw['p50']:+.1%}, {raw['p99']:+.1%}",
                     ", ".join(f"{x * 1000:.1f}" for x in p.per_request)))
    return rows


def calibrate(seconds: float | tuple[float, float, float], seed: int = 0) -> list[Point]:
    """The three calibration points (LOADS), each `seconds` long (or one duration per load)."""
    profile = load_profile(PROFILE)
    durations = seconds if isinstance(seconds, tuple) else (seconds,) * len(LOADS)
    http_s = http_round_trip(profile, seed=seed)
    return [measure_point(profile, load, d, seed, http_s) for load, d in zip(LOADS, durations)]


def load_points(path: Path) -> list[Point]:
    """The points a `--json` run wrote."""
    return [Point(**{**d, "emulator": Side(**d["emulator"]), "simulator": Side(**d["simulator"]),
                     "per_request": tuple(d["per_request"])}) for d in json.loads(path.read_text())]


def _seconds(text: str) -> float | tuple[float, float, float]:
    parts = [float(x) for x in text.split(",")]
    if len(parts) == 1:
        return parts[0]
    if len(parts) != len(LOADS):
        raise argparse.ArgumentTypeError(f"give one duration or {len(LOADS)} (one per load), not {len(parts)}")
    return tuple(parts)  # type: ignore[return-value]


def _describe(seconds: float | tuple[float, ...]) -> str:
    return ",".join(f"{s:g}" for s in seconds) if isinstance(seconds, tuple) else f"{seconds:g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.autoscaling.calibrate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=_seconds, default=30.0,
                    help="seconds of load per point, or one duration per load as A,B,C (default 30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-report", action="store_true", help=f"print only; do not rewrite {REPORT.name}")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the points as JSON (what the test reads)")
    args = ap.parse_args(argv)
    profile = load_profile(PROFILE)
    points = calibrate(args.seconds, args.seed)
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(p) for p in points], indent=1))
    rows = table(points)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    if not args.no_report:
        md = "\n".join(["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
                       + ["| " + " | ".join(r) + " |" for r in rows[1:]])
        md += (f"\n\nProfile `{PROFILE}`, {INPUTS_PER_REQUEST} x {input_tokens()}-token input(s) per request, capacity "
               f"{capacity(profile):.1f} requests/s, {_describe(args.seconds)} s per load. Reproduce: "
               f"`python -m bench.autoscaling.calibrate --seconds {_describe(args.seconds)} --seed {args.seed}`.")
        text = REPORT.read_text()
        if START not in text:
            raise SystemExit(f"{REPORT}: no {START} ... {END} block to fill")
        REPORT.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _m: f"{START}\n{md}\n{END}",
                                 text, flags=re.S))
        print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
