"""The fault scenarios. Each is a function `(env, **size) -> Result` that injects one fault into the real local
control plane (tests/cluster) while real `tei-operator run` processes work, and returns what it counted.

The sizes are parameters: the test suite runs a quick subset with small ones (tests/faults/test_faults.py), and
`python -m tests.faults` (make test-faults) runs all of them at full size and writes docs/reliability.md.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
import urllib.error
import urllib.request

import yaml

from .common import (REPO, BASE_BATCH_TOKENS, CPU_SPEC, Env, FaultError, Result, Workload, api_errors, census,
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
    r = Result(f"{component}-restart", f"{component} stopped, kept down {down_seconds:.0f} s after it exited, and "
               f"started again with the same flags while {services} services are patched every 0.2 s; "
               f"{added} services created after it is back")
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
            "services": len(expected), "stopped by": env.last_stop, "outage (s)": round(outage, 1),
            "client writes": load.writes, "client writes refused": load.failed,
            "slowest client write (s)": round(load.slowest, 1),
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


# ------------------------------------------------------------------------------------------------ Prometheus outage
def prometheus_outage(env: Env, outage_seconds: float = 40, window: int = 20, tick: float = 2.0,
                      load_rps: float = 2.0) -> Result:
    """The autoscaler reads TEI's metrics from a real Prometheus (scraping one emulator per pod). A service at 3
    replicas under a light load that asks for fewer (minReplicas lowered to 1 as Prometheus stops): while
    Prometheus is down (longer than the scale-down window) the replicas must not go down; once it is back, the
    scale-down the load asks for happens (the positive control: the operator did decide while it could see)."""
    import asyncio

    from tei_operator.emulator.loadgen import run_load
    from tests.cluster.emulated_pods import EmulatedPods
    from tests.e2e.conftest import Prometheus

    r = Result("prometheus-outage", f"Prometheus stopped for {outage_seconds:.0f} s (scale-down window {window} s, "
               f"tick {tick:.0f} s) under a {load_rps:.0f} requests/s load that asks for fewer replicas")
    ns = env.namespace("faults-prom")
    name = f"prom-{ns[-5:]}"
    pdir = env.workdir / f"prometheus-{ns}"
    pdir.mkdir(parents=True)
    prom = Prometheus(pdir, pdir / "targets.json")
    pods = EmulatedPods(str(env.cluster.kubeconfig), f"tei-operator.io/service={name}",
                        targets_file=prom.targets_file, tokens_per_second=4000.0, load_seconds=1.0,
                        log_dir=pdir / "emulators")
    stop_load = threading.Event()
    load_thread = threading.Thread(target=lambda: asyncio.run(_load_until(run_load, pods, ns, load_rps, stop_load)),
                                   daemon=True)
    try:
        prom.start()
        pods.start()
        op = env.operator("prometheus", ns, {
            "TEI_OPERATOR_METRICS_SOURCE": "prometheus", "TEI_OPERATOR_PROMETHEUS_URL": prom.url,
            "TEI_OPERATOR_AUTOSCALER_TICK_SECONDS": str(tick), "TEI_OPERATOR_METRICS_STALE_SECONDS": "10",
            "TEI_OPERATOR_MAX_PENDING_REPLICAS": "0"})
        spec = {"model": {"id": "BAAI/bge-m3"}, "gpu": {"count": 1, "type": "a100"},
                "podAnnotations": {"sim.tei-operator.io/readiness": "external"},
                "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 4, "targetQueueSize": 16,
                                "startupGraceSeconds": 10, "metricsMaxAgeSeconds": 10,
                                "scaleUp": {"periodSeconds": 2},
                                "scaleDown": {"stabilizationWindowSeconds": window, "periodSeconds": 2,
                                              "maxPodsStep": 1}}}
        env.kube.apply(service(name, ns, spec))
        replicas = lambda: (env.kube.get("deployment", name, ns) or {}).get("spec", {}).get("replicas")  # noqa
        ready = lambda: ((env.kube.get("deployment", name, ns) or {}).get("status") or {}).get("readyReplicas")  # noqa
        wait(lambda: ready() == 3, 90, "3 Ready replicas")
        wait(lambda: prom.scalar(f'count(up{{namespace="{ns}"}} == 1)') == 3, 60, "Prometheus to scrape 3 pods")
        limited = lambda: env.kube.condition("embeddingservice", name, ns, "ScalingLimited") or {}  # noqa: E731
        wait(lambda: limited().get("reason") not in (None, "MetricsUnavailable"), 60, "the autoscaler's first tick")
        load_thread.start()
        decisions = lambda action="", limit="": op.metric_sum(  # noqa: E731
            "tei_operator_autoscaler_decisions_total", **({"action": action} if action else {}),
            **({"limit": limit} if limit else {}))
        down_before = decisions("ScaleDown")
        prom.stop()
        t_out = time.monotonic()
        env.cluster.kubectl("patch", "embeddingservice", name, "-n", ns, "--type=merge", "-p",
                            json.dumps({"spec": {"autoscaling": {"minReplicas": 1}}}))
        wait(lambda: limited().get("reason") == "MetricsUnavailable", 4 * tick + 15,
             "ScalingLimited=MetricsUnavailable")
        seen = time.monotonic() - t_out
        held_before = decisions(limit="MetricsUnavailable")
        status_writes = lambda: op.metric_sum("tei_operator_api_requests_total", method="PATCH",  # noqa: E731
                                              resource="embeddingservices/status")
        writes_before = status_writes()
        samples: list[int] = []
        while time.monotonic() - t_out < outage_seconds:
            samples.append(replicas())
            time.sleep(0.5)
        held = decisions(limit="MetricsUnavailable") - held_before
        outage_writes = status_writes() - writes_before
        downs_during = decisions("ScaleDown") - down_before
        decreases = sum(1 for a, b in zip(samples, samples[1:]) if b < a)
        message = limited().get("message", "")
        prom.start()
        t_back = time.monotonic()
        wait(lambda: (replicas() or 3) < 3, window + 60, "the scale-down once Prometheus is back")
        back_s = time.monotonic() - t_back
        r.counts.update({
            "replicas when Prometheus stopped": 3, "outage (s)": outage_seconds,
            "ScalingLimited=MetricsUnavailable after (s)": round(seen, 1),
            "autoscaler ticks held on MetricsUnavailable": int(held),
            "status writes of the service during the rest of the outage": int(outage_writes),
            "scale-down decisions during the outage": int(downs_during),
            "replica decreases seen during the outage": decreases,
            "replicas during the outage (min-max)": f"{min(samples)}-{max(samples)}",
            "first scale-down after Prometheus came back (s)": round(back_s, 1),
        })
        r.check("0 scale-downs while metrics were unavailable", downs_during == 0 and decreases == 0
                and min(samples) == 3)
        r.check("the status said MetricsUnavailable", bool(seen))
        # The autoscaler writes failure 2 and "3 or more" (failureThreshold 3) after the first, then nothing; other
        # writers (the token meter's rate under the load) may add a few. It was one write per tick.
        r.check(f"the outage did not rewrite the status every tick ({int(outage_writes)} status writes over "
                f"{int(held)} held ticks)", held >= 5 and outage_writes < held / 2)
        r.check("the held scale-down happened once metrics were back", back_s <= window + 60)
        r.notes.append(f"ScalingLimited message during the outage: \"{message}\"")
    finally:
        stop_load.set()
        if load_thread.is_alive():
            load_thread.join(15)
        env.stop_operators()
        pods.stop()
        prom.stop()
        env.drop_namespace(ns)
    return r


async def _load_until(run_load, pods, namespace: str, rps: float, stop: threading.Event) -> None:
    import asyncio

    task = asyncio.create_task(run_load(lambda: pods.urls(namespace=namespace), lambda _t: rps, duration=3600,
                                        inputs_per_request=4, words_per_input=20, max_in_flight=50, timeout=10,
                                        seed=3))
    while not stop.is_set():
        await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# ------------------------------------------------------------------------------------------------ GPU node lost
def gpu_node_lost(env: Env, node: str = "l4-0", gpu_type: str = "l4", away_seconds: float = 5,
                  timeout: float = 180) -> Result:
    """The only node of a GPU type is deleted (the Node object, as a cloud controller does for a lost machine) and
    created again later. Its pod is garbage-collected, the replacement cannot be placed (status says why), and it
    runs again once the node is back."""
    r = Result("gpu-node-lost", f"GPU node `{node}` (the only {gpu_type} node) deleted, created again "
               f"{away_seconds:.0f} s after the status said why")
    ns = env.namespace("faults-node")
    name = "on-l4"
    op = env.operator("node", ns)
    try:
        env.kube.apply(service(name, ns, {"model": {"id": "BAAI/bge-m3"}, "gpu": {"count": 1, "type": gpu_type}}))
        env.kube.wait_condition("embeddingservice", name, ns, "Ready", timeout=90)
        pid = op.proc.pid
        first = env.kube.list("pods", ns, f"tei-operator.io/service={name}")
        old_uids = {p["metadata"]["uid"] for p in first}
        saved = env.kube.get("node", node)
        manifest = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {k: saved["metadata"][k] for k in ("name", "labels", "annotations")},
                    "spec": {"taints": [t for t in saved["spec"].get("taints") or []
                                        if t["key"].startswith("nvidia.com/")]},
                    "status": {"capacity": saved["status"]["capacity"],
                               "allocatable": saved["status"]["allocatable"]}}
        env.cluster.kubectl("delete", "node", node, "--wait=false")
        t0 = time.monotonic()
        wait(lambda: env.kube.get("node", node) is None, 30, f"node {node} to be gone")
        time.sleep(3)
        ready_in_gap = (env.kube.condition("embeddingservice", name, ns, "Ready") or {}).get("status")
        wait(lambda: not ({p["metadata"]["uid"] for p in env.kube.list("pods", ns, f"tei-operator.io/service={name}")
                           if not p["metadata"].get("deletionTimestamp")} & old_uids), timeout,
             "the lost node's pod to be removed", interval=0.5)
        gone_s = time.monotonic() - t0
        cond = wait(lambda: (lambda c: c if c and c["status"] == "True" and c["reason"] == "Unschedulable" else None)(
            env.kube.condition("embeddingservice", name, ns, "Degraded")), timeout, "Degraded=Unschedulable")
        why_s = time.monotonic() - t0
        ready = env.kube.condition("embeddingservice", name, ns, "Ready") or {}
        available = env.kube.condition("embeddingservice", name, ns, "Available") or {}
        time.sleep(away_seconds)
        env.cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
        t1 = time.monotonic()
        env.kube.wait_condition("embeddingservice", name, ns, "Ready", timeout=timeout)
        back_s = time.monotonic() - t1
        now = env.kube.list("pods", ns, f"tei-operator.io/service={name}")
        on_node = [p for p in now if p["spec"].get("nodeName") == node and p["metadata"]["uid"] not in old_uids]
        degraded_after = env.kube.condition("embeddingservice", name, ns, "Degraded") or {}
        c = census(env, ns, {name: {"replicas": 1}})
        r.counts.update({
            "Ready 3 s after the node was deleted (the pod object still says Ready)": ready_in_gap,
            "node deleted -> old pod removed by the pod garbage collector (s)": round(gone_s, 1),
            "node deleted -> status says Unschedulable (s)": round(why_s, 1),
            "Ready while the replacement was Pending": ready.get("status"),
            **({"Available while the replacement was Pending": available.get("status")} if available else {}),
            "node created -> service Ready (s)": round(back_s, 1),
            "pods rescheduled onto the returned node": len(on_node),
            "duplicate / orphaned children": f"{c.duplicate_children} / {c.orphaned_children}",
            "operator restarts": 0 if op.alive() and op.proc.pid == pid else 1,
        })
        r.check("the status said why: Degraded=Unschedulable with the scheduler's reason (no node matches the GPU "
                "selector)", "cannot be scheduled" in cond["message"] and "node affinity/selector" in cond["message"])
        r.check("Ready=False while the node was away", ready.get("status") == "False")
        r.check("a new pod ran on the returned node and the service is Ready again", len(on_node) == 1)
        r.check("Degraded cleared", degraded_after.get("status") == "False")
        r.check("0 duplicate or orphaned children", c.duplicate_children == c.orphaned_children == 0)
        r.notes.append(f"Degraded message while the node was away: \"{cond['message']}\"")
    finally:
        if env.kube.get("node", node) is None and "manifest" in locals():
            env.cluster.kubectl("create", "-f", "-", input=json.dumps(manifest), check=False)
        env.stop_operators()
        env.drop_namespace(ns)
    return r


# ------------------------------------------------------------------------------------------------ crash loop
def crash_loop(env: Env, timeout: float = 90) -> Result:
    """A TEI container in CrashLoopBackOff (kwok's tei-pod-crashloop Stage, with a termination message like TEI's
    when the model cannot be downloaded): Degraded with the reason and that message, then recovery on a fix."""
    r = Result("crash-loop", "TEI container crash-looping (kwok Stage: CrashLoopBackOff, exit code 1, termination "
               "message)")
    ns = env.namespace("faults-crash")
    name = "crashy"
    op = env.operator("crash", ns)
    try:
        env.kube.apply(service(name, ns, {**CPU_SPEC, "podAnnotations": {"sim.tei-operator.io/fail": "crashloop"}}))
        t0 = time.monotonic()
        cond = env.kube.wait_condition("embeddingservice", name, ns, "Degraded", reason="CrashLoopBackOff",
                                       timeout=timeout)
        degraded_s = time.monotonic() - t0
        events = [e for e in env.kube.events(ns, name) if e["reason"] == "CrashLoopBackOff"]
        pods = env.kube.list("pods", ns, f"tei-operator.io/service={name}")
        logs = env.cluster.kubectl("logs", pods[0]["metadata"]["name"], "-n", ns, "--tail=5", check=False)
        dep = env.kube.get("deployment", name, ns)
        policy = dep["spec"]["template"]["spec"]["containers"][0].get("terminationMessagePolicy")
        env.kube.apply(service(name, ns, dict(CPU_SPEC)))
        t1 = time.monotonic()
        env.kube.wait_condition("embeddingservice", name, ns, "Ready", timeout=timeout)
        wait(lambda: env.kube.condition("embeddingservice", name, ns, "Degraded")["status"] == "False", 30,
             "Degraded=False")
        r.counts.update({
            "created -> Degraded=CrashLoopBackOff (s)": round(degraded_s, 1),
            "Warning events CrashLoopBackOff": len(events),
            "termination message in the status": "yes" if "Could not download model artifacts" in cond["message"]
            else "no",
            "`kubectl logs` served here": "yes" if logs.returncode == 0 else "no (kwok serves no logs here)",
            "fixed -> Ready and Degraded=False (s)": round(time.monotonic() - t1, 1),
            "operator restarts": 0 if op.alive() else 1,
        })
        r.check("Degraded=True with reason CrashLoopBackOff", cond["status"] == "True")
        r.check("the status carries the container's termination message (exit code and TEI's error)",
                "Could not download model artifacts" in cond["message"] and "exit code 1" in cond["message"])
        r.check("the TEI container uses terminationMessagePolicy FallbackToLogsOnError (the kubelet puts the last "
                "log lines in the termination message)", policy == "FallbackToLogsOnError")
        r.notes.append(f"Degraded message: \"{cond['message']}\"")
        if logs.returncode != 0:
            r.notes.append("kwok runs no container and this harness starts it without its kubelet server "
                           "(`--server-address`), so `kubectl logs` fails here (\""
                           f"{(logs.stderr.strip().splitlines() or [''])[-1][:160]}\"). On a real node the kubelet "
                           "copies the last log lines of a failed container into its termination message "
                           "(FallbackToLogsOnError, at most 80 lines / 2 KiB), which is what the status shows.")
    finally:
        env.stop_operators()
        env.drop_namespace(ns)
    return r


# ------------------------------------------------------------------------------------------------ RBAC missing
def rbac_missing(env: Env, timeout: float = 60, observe_seconds: float = 75) -> Result:
    """The operator runs as a ServiceAccount with exactly the chart's RBAC for `watchNamespaces: [A]` (helm
    template), but is told to watch A and B: B has no Role. It must keep serving A, not crash, and say clearly
    that it may not read B (naming the namespace and the missing permission)."""
    from tests.cluster import tools

    r = Result("rbac-missing", "a watched namespace without RBAC (the chart's Roles for namespace A; the operator "
               "told to watch A and B)")
    system, ns_a, ns_b = env.namespace("faults-sys"), env.namespace("faults-rbac-a"), env.namespace("faults-rbac-b")
    try:
        rendered = subprocess.run(
            [str(tools.binary("helm")), "template", "tei-operator", str(REPO / "charts" / "tei-operator"),
             "--namespace", system, "--set", f"watchNamespaces={{{ns_a}}}", "--set", "crds.enabled=false"],
            capture_output=True, text=True, check=True).stdout
        keep = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
        docs = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") in keep]
        for d in docs:  # cluster-scoped names made unique per run
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                d["metadata"]["name"] += f"-{system}"
            if d["kind"] == "ClusterRoleBinding":
                d["roleRef"]["name"] += f"-{system}"
        env.kube.apply(docs)
        sa = next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
        token = env.cluster.kubectl("create", "token", sa, "-n", system, "--duration=2h").stdout.strip()
        kubeconfig = env.workdir / f"kubeconfig-{system}"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "local", "cluster": {"server": env.cluster.api_url, "certificate-authority":
                                                       str(env.cluster.workdir / "pki" / "ca.crt")}}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}]}))
        op = env.operator("rbac", f"{ns_a},{ns_b}", {"TEI_OPERATOR_LEADER_ELECTION_NAMESPACE": system},
                          kubeconfig=str(kubeconfig), start=False)
        t0 = time.monotonic()
        op.start(timeout=90)
        env.kube.apply([service("in-a", ns_a), service("in-b", ns_b)])
        env.kube.wait_condition("embeddingservice", "in-a", ns_a, "Ready", timeout=timeout)
        a_s = time.monotonic() - t0
        needle = lambda: [line for line in op.log_text().splitlines()  # noqa: E731
                          if ns_b in line and any(w in line.lower() for w in ("forbidden", "permission", "may not"))]
        try:
            lines = wait(needle, timeout, f"a log line naming {ns_b} and the missing permission")
        except FaultError:
            lines = []
        said_s = time.monotonic() - t0
        # Still alive and still working after a while (longer than kopf's retries of a failed watch, 54 s): a
        # second service in A converges.
        time.sleep(max(0.0, observe_seconds - (time.monotonic() - t0)))
        env.kube.apply(service("in-a-2", ns_a))
        env.kube.wait_condition("embeddingservice", "in-a-2", ns_a, "Ready", timeout=timeout)
        try:
            with urllib.request.urlopen(op.health_url.replace("/healthz", "/readyz"), timeout=5) as resp:
                readyz = resp.status
        except urllib.error.HTTPError as exc:
            readyz = exc.code
        b_status = (env.kube.get("embeddingservice", "in-b", ns_b) or {}).get("status")
        first = lines[0] if lines else ""
        r.counts.update({
            "operator alive": "yes" if op.alive() else f"no (exit {op.proc.returncode if op.proc else '?'})",
            "operator starts": op.starts,
            "service in A Ready (s)": round(a_s, 1),
            "log lines naming B and the permission": len(lines),
            "first such line after (s)": round(said_s, 1) if lines else "never",
            "/readyz": readyz,
            "conditions written in B": len((b_status or {}).get("conditions") or []),
        })
        r.check("the operator did not crash", op.alive() and op.starts == 1)
        r.check(f"a log line names {ns_b} and the missing permission", bool(lines))
        controller_lines = [line for line in lines if f"Skipped namespace {ns_b}:" in line]
        r.check("the controller logged an error naming the namespace and the verbs and resources it may not use",
                any("list embeddingservices.tei-operator.io" in line for line in controller_lines))
        failed_watchers = [line for line in op.log_text().splitlines()
                           if "Watcher for" in line and "has failed" in line]
        r.counts["kopf watchers failed"] = len(failed_watchers)
        r.check("no watcher failed (kopf never watches the namespace it may not read)", not failed_watchers)
        r.notes.append(f"status of the service in B: {json.dumps(b_status)[:300]}")
        for line in list(dict.fromkeys(controller_lines[:1] + lines))[:3]:
            r.notes.append(f"log: `{_strip_namespace(line, ns_a, ns_b, system)[:300]}`")
        if not first:
            r.notes.append(f"operator log tail: `{op.log_tail(5)[-600:]}`")
    finally:
        env.stop_operators()
        for ns in (system, ns_a, ns_b):
            env.drop_namespace(ns)
        for d in locals().get("docs") or []:
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                env.cluster.kubectl("delete", d["kind"].lower(), d["metadata"]["name"], "--wait=false", check=False)
    return r


def _strip_namespace(line: str, a: str, b: str, system: str) -> str:
    """The log line with the run's random namespace names replaced by stable ones (for the report)."""
    return line.replace(b, "B").replace(a, "A").replace(system, "SYSTEM").replace("`", "'")
