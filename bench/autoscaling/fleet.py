"""A simulated fleet of TEI replicas behind a Service, and the Prometheus that scrapes them.

Model (documented in docs/benchmarks/autoscaling.md, "How the simulator works"):
- Time advances in steps of `dt` (0.2 s). Requests are individual (arrival time, inputs, tokens), pre-generated per
  trace and seed; each is routed at random to a Ready replica (kube-proxy's random pick), the same random number per
  request for every policy.
- A replica is one batching worker: a FIFO queue of tokens (and of inputs, for the concurrency limit) drained by
  batches of at most max_batch_tokens, each costing `batch_overhead_s + tokens / tokens_per_second`. Within a step
  the queue is a fluid: the worker's throughput is that of a batch made of what is waiting
  (b / (overhead + b / tokens_per_second)), so small queues batch inefficiently and long ones fill batches.
- A request's latency = the rest of the batch running when it arrives (only if nothing is queued ahead) + the
  queued tokens ahead of it at arrival / tokens_per_second + one overhead per batch ahead + its own batch
  (overhead + its tokens + the tokens that arrived with it). Requests whose inputs would push the replica's
  waiting inputs over max_concurrent_requests get 429; requests that find no Ready replica fail (503).
- Pods: Pending (no free GPU in the quota) -> Loading (model download and load, sampled 30-120 s; the k-th pod
  created gets the k-th sampled time whatever the policy) -> Ready -> Draining (removed from the Service, finishes
  its queue as TEI does on SIGTERM) -> gone. A GPU is billed from Loading until the pod is gone.
- Prometheus scrapes every Ready pod's counters and te_queue_size every 15 s; rate() over 1 min is computed from
  the scraped samples like Prometheus does (without extrapolation).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from tei_operator.autoscaling.signals import nonempty_batch_rate

from .traces import Arrivals

PENDING, LOADING, READY, DRAINING = range(4)
RATE_MEMORY_S = 1.0  # the smoothed arrival rates per replica average over about this long


@dataclass(frozen=True)
class EngineProfile:
    """One replica's performance and limits (defaults: BGE-M3 on an A100, TEI 1.9)."""

    tokens_per_second: float = 60_000.0
    batch_overhead_s: float = 0.006
    max_batch_tokens: int = 65_536
    max_concurrent_requests: int = 512
    load_time_min_s: float = 30.0
    load_time_max_s: float = 120.0

    def peak_throughput(self) -> float:
        """Tokens/s of a replica that always runs full batches: the physical limit used for cost ratios."""
        b = self.max_batch_tokens
        return b / (self.batch_overhead_s + b / self.tokens_per_second)


class Pod:
    __slots__ = ("id", "state", "created", "ready_at", "load_time", "q_tok", "q_inp", "tok_sum", "batches",
                 "zero_batches", "requests", "overloaded", "rate_tok", "rate_req", "q_req", "successes")

    def __init__(self, pid: int, created: float, load_time: float, state: int = PENDING):
        self.id, self.created, self.load_time, self.state = pid, created, load_time, state
        self.ready_at = created + load_time if state != READY else created
        self.q_tok = self.q_inp = self.q_req = self.successes = 0.0
        self.tok_sum = self.batches = self.zero_batches = self.requests = self.overloaded = 0.0
        self.rate_tok = self.rate_req = 0.0  # smoothed arrival rates (tokens/s, requests/s), ~1 s memory


class Fleet:
    """The Deployment's pods, the Service's routing and every request's latency."""

    def __init__(self, engine: EngineProfile, arrivals: Arrivals, seed: int, quota: int | None,
                 initial_ready: int, dt: float):
        self.e, self.a, self.quota, self.dt = engine, arrivals, quota, dt
        self._smooth = min(1.0, dt / RATE_MEMORY_S)
        rng = np.random.default_rng(seed + 7919)
        self._load_times = rng.uniform(engine.load_time_min_s, engine.load_time_max_s, 4096)
        self._created = 0
        self.pods: list[Pod] = []
        self.desired = 0
        for _ in range(initial_ready):
            self.pods.append(Pod(self._next_id(), 0.0, 0.0, READY))
        self.desired = initial_ready
        self.latency = np.full(len(arrivals.t), np.inf)
        self.rejected = np.zeros(len(arrivals.t), dtype=bool)
        self.gpu_seconds = 0.0
        self.served_tokens = 0.0
        self.n_429 = 0
        self.n_unavailable = 0

    def _next_id(self) -> int:
        self._created += 1
        return self._created - 1

    # --- Kubernetes side -------------------------------------------------------------------------------------
    def live(self) -> list[Pod]:
        """Pods of the Deployment that count toward spec.replicas (not terminating)."""
        return [p for p in self.pods if p.state != DRAINING]

    def count(self, state: int) -> int:
        return sum(1 for p in self.pods if p.state == state)

    def set_desired(self, n: int, now: float) -> None:
        """Scale the Deployment: create pods, or delete the least useful ones first (as a ReplicaSet does)."""
        live = self.live()
        self.desired = n
        if n > len(live):
            for _ in range(n - len(live)):
                pid = self._next_id()
                self.pods.append(Pod(pid, now, float(self._load_times[pid % len(self._load_times)])))
            self._schedule(now)
        elif n < len(live):
            # ReplicaSet order: unscheduled, then not ready, then ready; newest first within each
            victims = sorted(live, key=lambda p: (p.state == READY, p.state == LOADING, -p.created))
            for p in victims[: len(live) - n]:
                if p.state == READY and p.q_tok > 0:
                    p.state = DRAINING
                else:
                    self.pods.remove(p)

    def _schedule(self, now: float) -> None:
        used = sum(1 for p in self.pods if p.state in (LOADING, READY, DRAINING))
        for p in self.pods:
            if p.state == PENDING and (self.quota is None or used < self.quota):
                p.state, p.created, p.ready_at = LOADING, p.created, now + p.load_time
                used += 1

    def advance(self, now: float) -> None:
        """Pod lifecycle for this step: scheduling, models finishing to load, drained pods going away."""
        changed = False
        for p in self.pods:
            if p.state == LOADING and now >= p.ready_at:
                p.state = READY
        if any(p.state == DRAINING and p.q_tok <= 0 for p in self.pods):
            self.pods = [p for p in self.pods if not (p.state == DRAINING and p.q_tok <= 0)]
            changed = True
        if changed or any(p.state == PENDING for p in self.pods):
            self._schedule(now)
        self.gpu_seconds += self.dt * sum(1 for p in self.pods if p.state != PENDING)

    # --- serving -----------------------------------------------------------------------------------------------
    def serve(self, now: float, i0: int, i1: int) -> None:
        """Route the requests arriving in [now, now + dt), estimate their latency, and run every worker for dt."""
        e, dt, a = self.e, self.dt, self.a
        mu, c, B = e.tokens_per_second, e.batch_overhead_s, float(e.max_batch_tokens)
        ready = [p for p in self.pods if p.state == READY]
        n = len(ready)
        if i1 > i0 and n == 0:
            self.n_unavailable += i1 - i0
            self.rejected[i0:i1] = True
        if n and i1 > i0:
            r = (a.route[i0:i1] * n).astype(np.intp)
            tok = a.tokens[i0:i1]
            inp = a.inputs[i0:i1]
            frac = (a.t[i0:i1] - now) / dt
            q0 = np.fromiter((p.q_tok for p in ready), float, n)
            qi0 = np.fromiter((p.q_inp for p in ready), float, n)
            lam = np.fromiter((p.rate_tok for p in ready), float, n)
            lam_req = np.fromiter((p.rate_req for p in ready), float, n)
            a_tok = np.bincount(r, tok, n)
            a_inp = np.bincount(r, inp, n)
            b = np.minimum(B, q0 + a_tok)
            thr = np.where(b > 0, b / (c + b / mu), mu)
            # backlog ahead at the arrival instant: the queue at the step's start, plus what arrived earlier in
            # the step, minus what the worker has done meanwhile (fluid within the step)
            ahead = np.maximum(0.0, q0[r] + frac * (a_tok[r] - thr[r] * dt))
            inp_per_tok = (qi0 + a_inp) / np.maximum(q0 + a_tok, 1.0)
            rej = ahead * inp_per_tok[r] + inp > e.max_concurrent_requests
            acc = ~rej
            if rej.any():
                idx = np.nonzero(rej)[0]
                self.rejected[i0 + idx] = True
                self.n_429 += len(idx)
                over = np.bincount(r[rej], minlength=n)
                a_tok = np.bincount(r[acc], tok[acc], n)
                a_inp = np.bincount(r[acc], inp[acc], n)
                ahead = np.maximum(0.0, q0[r] + frac * (a_tok[r] - thr[r] * dt))
            else:
                over = None
            # The batch running when the request arrives (when nothing is queued ahead; else it is in `ahead`):
            # busy with probability ~ utilization + per-batch overheads; a running batch has the steady-state size
            # of a batching server, lam * c / (1 - rho) tokens, or at least one mean request.
            rho = lam / mu
            p_busy = np.minimum(1.0, rho + lam_req * c)
            mean_req = lam / np.maximum(lam_req, 1e-9)
            b_star = np.where(rho < 1.0, np.minimum(B, lam * c / np.maximum(1.0 - rho, 1e-3)), B)
            t_cur = c + np.maximum(b_star, mean_req) / mu
            u = a.jitter[i0:i1]
            pb = p_busy[r]
            residual = np.where((ahead < 1.0) & (u < pb), u / np.maximum(pb, 1e-9) * t_cur[r], 0.0)
            with_it = np.minimum(B, lam[r] * residual)  # tokens arriving while it waits join its batch
            lat = residual + (ahead + tok + with_it) / mu + c * (1.0 + np.floor(ahead / B))
            self.latency[i0:i1][acc] = lat[acc]
            reqs = np.bincount(r, minlength=n)
            for j, p in enumerate(ready):
                p.rate_tok += (a_tok[j] / dt - p.rate_tok) * self._smooth
                p.rate_req += (reqs[j] / dt - p.rate_req) * self._smooth
                p.q_tok += a_tok[j]
                p.q_inp += a_inp[j]
                p.q_req += reqs[j] - (over[j] if over is not None else 0)
                p.requests += reqs[j]
                if over is not None:
                    p.overloaded += over[j]
        if i1 == i0:
            for p in ready:
                p.rate_tok -= p.rate_tok * self._smooth
                p.rate_req -= p.rate_req * self._smooth
        for p in self.pods:
            if p.q_tok <= 0 or p.state not in (READY, DRAINING):
                continue
            b = min(B, p.q_tok)
            done = min(p.q_tok, dt * b / (c + b / mu))
            p.batches += done / b
            p.tok_sum += done
            self.served_tokens += done
            left = 1.0 - done / p.q_tok
            p.successes += p.q_req * (1.0 - left)
            p.q_inp = max(0.0, p.q_inp * left)
            p.q_req = max(0.0, p.q_req * left)
            p.q_tok -= done
            if p.q_tok < 1e-6:
                p.successes += p.q_req
                p.q_tok = p.q_inp = p.q_req = 0.0
                p.zero_batches += 1  # TEI records a zero-size batch when the worker runs dry


class Prometheus:
    """Scrapes the Ready pods every `interval` s; answers the few queries the autoscalers make."""

    def __init__(self, interval: float = 15.0, window: float = 60.0, outage: tuple[float, float] | None = None):
        self.interval, self.window, self.outage = interval, window, outage
        self.scrapes: deque[tuple[float, dict[int, tuple]]] = deque()

    def scrape(self, now: float, fleet: Fleet) -> None:
        sample = {p.id: (p.tok_sum, p.batches + p.zero_batches, p.zero_batches, p.requests, p.overloaded,
                         p.successes, p.q_inp) for p in fleet.pods if p.state == READY}
        self.scrapes.append((now, sample))
        while self.scrapes and self.scrapes[0][0] < now - self.window - self.interval:
            self.scrapes.popleft()

    def down(self, now: float) -> bool:
        return self.outage is not None and self.outage[0] <= now < self.outage[1]

    def query(self, now: float) -> dict[str, float] | None:
        """Fleet totals: queue, and rate()s over the window. None = no series (outage or nothing scraped)."""
        if self.down(now) or not self.scrapes or not self.scrapes[-1][1]:
            return None
        t_last, last = self.scrapes[-1]
        out = {"queue": sum(v[6] for v in last.values())}
        rates = np.zeros(6)
        have_rate = False
        queue_avg = 0.0
        for pid, v in last.items():
            inside = [s[pid] for t0, s in self.scrapes if t0 >= t_last - self.window - 1e-9 and pid in s]
            queue_avg += sum(x[6] for x in inside) / len(inside)  # avg_over_time
            for t0, s in self.scrapes:
                if t0 >= t_last - self.window - 1e-9 and pid in s and t0 < t_last:
                    rates += (np.array(v[:6]) - np.array(s[pid][:6])) / (t_last - t0)
                    have_rate = True
                    break
        out["queue_avg"] = queue_avg
        if have_rate:
            tok, count, zero, req, over, ok = rates
            out.update(tokens=tok, nonempty=nonempty_batch_rate(count, zero), requests=req, overloaded=over,
                       successes=ok)
        return out
