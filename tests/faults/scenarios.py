"""The fault scenarios. Each is a function `(env, **size) -> Result` that injects one fault into the real local
control plane (tests/cluster) while real `tei-operator run` processes work, and returns what it counted.

The sizes are parameters: the test suite runs a quick subset with small ones (tests/faults/test_faults.py), and
`python -m tests.faults` (make test-faults) runs all of them at full size and writes docs/reliability.md.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from tests.cluster.pools import L4

from .common import (BASE_BATCH_TOKENS, CPU_SPEC, Env, FaultError, Result, Workload, api_errors, census,
                     create_services, service, wait, wait_converged)


# ------------------------------------------------------------------------------------------------ operator SIGKILL
def operator_sigkill(env: Env, services: int = 50, kills: int = 20, seed: int = 11,
                     converge_timeout: float = 300) -> Result:
    """SIGKILL the operator at `kills` seeded random points of a workload that creates `services` services, updates
    each (spec.engine.maxBatchTokens) and scales each to 2 replicas (`kubectl scale`), in a seeded random order.
    A killed operator is started again at once (in the background, the workload does not wait)."""
    r = Result("operator-sigkill", f"operator SIGKILL at {kills} random points (seed {seed}) while {services} "
               "services are created, updated and scaled")
    ns = env.namespace("faults-kill")
    rng = random.Random(seed)
    names = [f"svc-{i:02d}" for i in range(services)]
    ops = [("create", n) for n in names]
    later = [("update", n) for n in names] + [("scale", n) for n in names]
    rng.shuffle(later)
    # An update or a scale may only come after its service's create: interleave by moving each create early.
    ops = ops[: services // 2] + later[: len(later) // 3] + ops[services // 2:] + later[len(later) // 3:]
    created: set[str] = set()
    ordered: list[tuple[str, str]] = []
    pending: list[tuple[str, str]] = []
    for op in ops:
        if op[0] == "create" or op[1] in created:
            ordered.append(op)
            created.add(op[1])
            still = [p for p in pending if p[1] in created]
            ordered += still
            pending = [p for p in pending if p[1] not in created]
        else:
            pending.append(op)
    ordered += pending
    kill_at = set(rng.sample(range(1, len(ordered)), kills))
    op_proc = env.operator("kill", ns)
    expected: dict[str, dict] = {}
    restarts: list[threading.Thread] = []
    failed_writes = 0
    unexpected_exits = 0
    t0 = time.monotonic()
    try:
        for i, (what, name) in enumerate(ordered):
            if i in kill_at:
                for t in restarts:
                    t.join()
                if not op_proc.alive():
                    unexpected_exits += 1
                op_proc.kill()
                t = threading.Thread(target=op_proc.start, kwargs={"timeout": 90}, daemon=True)
                t.start()
                restarts.append(t)
            if what == "create":
                res = env.kube.apply(service(name, ns, {**CPU_SPEC, "engine": {"maxBatchTokens": BASE_BATCH_TOKENS}}),
                                     check=False)
                expected[name] = {"replicas": 1, "batch": BASE_BATCH_TOKENS}
            elif what == "update":
                batch = BASE_BATCH_TOKENS + 1 + i
                res = env.cluster.kubectl("patch", "embeddingservice", name, "-n", ns, "--type=merge", "-p",
                                          json.dumps({"spec": {"engine": {"maxBatchTokens": batch}}}), check=False)
                expected[name]["batch"] = batch
            else:
                res = env.cluster.kubectl("scale", "embeddingservice", name, "-n", ns, "--replicas=2", check=False)
                expected[name]["replicas"] = 2
            failed_writes += res.returncode != 0
        for t in restarts:
            t.join()
        workload_s = time.monotonic() - t0
        final, converge_s = wait_converged(env, ns, expected, converge_timeout)
        r.counts.update({
            "services": services, "operations": len(ordered), "SIGKILLs": op_proc.starts - 1,
            "operator exits other than the kills": unexpected_exits + (0 if op_proc.alive() else 1),
            "client writes refused": failed_writes,
            "converged": f"{final.converged}/{services}",
            "duplicate children": final.duplicate_children, "orphaned children": final.orphaned_children,
            "pods beyond desired": final.extra_pods,
            "workload (s)": round(workload_s, 1), "converged after the workload (s)": round(converge_s, 1),
        })
        r.check("every service converged", final.converged == services)
        r.check("0 duplicate children", final.duplicate_children == 0)
        r.check("0 orphaned children", final.orphaned_children == 0)
        r.check("0 pods beyond the desired replicas", final.extra_pods == 0)
        r.check("0 client writes refused", failed_writes == 0)
        r.check(f"{kills} SIGKILLs delivered", op_proc.starts - 1 == kills)
        if final.not_converged:
            r.notes.append(f"not converged: {', '.join(final.not_converged[:10])}")
    finally:
        env.stop_operators()
        env.drop_namespace(ns)
    return r


# ------------------------------------------------------------------------------------------------ leader kill
def leader_kill(env: Env, rounds: int = 3) -> Result:
    """Two replicas with leader election; SIGKILL and SIGTERM of the leader. This is bench/failover.py's round,
    called as it is (the same code writes docs/benchmarks/failover.md)."""
    import statistics

    from bench.failover import Bench

    r = Result("leader-kill", f"leader SIGKILL/SIGTERM with 2 replicas ({rounds} rounds of bench/failover.py)")
    bench = Bench(env.cluster, env.workdir / "failover")
    env.cluster.kubectl("create", "namespace", bench.namespace)
    try:
        results = [bench.round(i + 1) for i in range(rounds)]
    finally:
        env.drop_namespace(bench.namespace)
    med = lambda f: round(statistics.median(getattr(x, f) for x in results), 1)  # noqa: E731
    standby_writes = max(x.standby_writes for x in results)
    r.counts.update({
        "rounds": rounds, "standby writes while both ran (max)": int(standby_writes),
        "leader writes (median)": int(med("leader_writes")),
        "SIGKILL -> Lease taken (s, median)": med("kill_to_lease"),
        "SIGKILL -> standby wrote (s, median)": med("kill_to_write"),
        "SIGKILL -> standby wrote (s, max)": round(max(x.kill_to_write for x in results), 1),
        "SIGTERM -> new leader wrote (s, median)": med("term_to_write"),
    })
    r.check("0 writes by the standby (no double writes)", standby_writes == 0)
    r.check("standby acted within 15 s of every SIGKILL", max(x.kill_to_write for x in results) <= 15)
    return r


# ------------------------------------------------------------------------------------------------ API server / etcd
def _control_plane_restart(env: Env, component: str, services: int, down_seconds: float, added: int,
                           converge_timeout: float) -> Result:
    r = Result(f"{component}-restart", f"{component} stopped for {down_seconds:.0f} s and restarted with the same "
               f"flags while {services} services are patched every 0.2 s")
    ns = env.namespace(f"faults-{component.split('-')[-1]}")
    op = env.operator(component, ns)
    try:
        expected = create_services(env, ns, services)
        first, _ = wait_converged(env, ns, expected, converge_timeout)
        if first.converged != services:
            raise FaultError(f"{first.converged}/{services} services converged before the fault")
        errors_before = api_errors(op)
        pid = op.proc.pid
        load = Workload(env, ns, list(expected), expected)
        load.start()
        time.sleep(2)
        outage = env.restart_component(component, down_seconds)
        # New services after the restart: only an operator whose watches came back sees them.
        expected.update(create_services(env, ns, added, prefix="after"))
        time.sleep(2)
        load.stop()
        final, converge_s = wait_converged(env, ns, expected, converge_timeout)
        same = op.alive() and op.proc.pid == pid
        r.counts.update({
            "services": len(expected), "outage (s)": round(outage, 1),
            "client writes": load.writes, "client writes refused": load.failed,
            "operator restarts": 0 if same else 1,
            "operator API errors (not 404/409)": int(api_errors(op) - errors_before) if same else "n/a",
            "converged": f"{final.converged}/{len(expected)}",
            "duplicate / orphaned children": f"{final.duplicate_children} / {final.orphaned_children}",
            "converged after the last write (s)": round(converge_s, 1),
        })
        r.check("the operator kept running (no restart)", same)
        r.check("every service converged, the ones created after the restart too", final.converged == len(expected))
        r.check("0 duplicate or orphaned children", final.duplicate_children == final.orphaned_children == 0)
        if load.first_error:
            r.notes.append(f"first refused client write: {load.first_error}")
        if final.not_converged:
            r.notes.append(f"not converged: {', '.join(final.not_converged[:10])}")
    finally:
        env.stop_operators()
        env.drop_namespace(ns)
    return r


def apiserver_restart(env: Env, services: int = 20, down_seconds: float = 5, added: int = 5,
                      converge_timeout: float = 180) -> Result:
    """kube-apiserver stopped and started again (same flags and port) under a write load: the operator recovers
    without a restart, every service converges (those created after the restart too)."""
    return _control_plane_restart(env, "kube-apiserver", services, down_seconds, added, converge_timeout)


def etcd_restart(env: Env, services: int = 20, down_seconds: float = 5, added: int = 5,
                 converge_timeout: float = 180) -> Result:
    """etcd stopped and started again (same data directory and ports) under a write load."""
    return _control_plane_restart(env, "etcd", services, down_seconds, added, converge_timeout)
