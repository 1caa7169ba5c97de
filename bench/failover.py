"""`python -m bench.failover`: two operator replicas on the local control plane; how fast the standby takes over and
whether it ever writes while the leader lives. Prints a table and writes docs/benchmarks/failover.md.

    python -m bench.failover                  # 5 rounds on a fresh control plane, writes the report
    python -m bench.failover --rounds 1 --no-report --cluster DIR     # one round on a running cluster

Each round starts replica A, waits until it holds the Lease, starts replica B, creates services and updates one,
and counts each replica's writes from its own /metrics (Lease renewals left out). Then:
- SIGKILL of the leader A: the time until B holds the Lease, and until B wrote the Deployment of a service created
  right after the kill (the standby *acts*);
- a clean handover (rolling update): replica C starts as standby, B gets SIGTERM and releases the Lease; the time
  until C holds it and until C wrote a new service's Deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "benchmarks" / "failover.md"
SPEC = {"model": {"id": "BAAI/bge-small-en-v1.5"}, "gpu": {"count": 0}}
WRITES = ("POST", "PUT", "PATCH", "DELETE")
LEASE_NAME = "tei-operator-bench"


@dataclass
class Round:
    leader_writes: float
    standby_writes: float
    kill_to_lease: float
    kill_to_write: float
    term_to_lease: float
    term_to_write: float


def median_row(rounds: list[Round]) -> Round:
    return Round(*(statistics.median(getattr(r, f) for r in rounds) for f in Round.__dataclass_fields__))


def row(name: str, r: Round) -> str:
    """One table row."""
    return (f"| {name} | {r.leader_writes:.0f} | {r.standby_writes:.0f} | {r.kill_to_lease:.1f} | "
            f"{r.kill_to_write:.1f} | {r.term_to_lease:.1f} | {r.term_to_write:.1f} |")


def table(rounds: list[Round]) -> str:
    """The Markdown table of every round and the medians."""
    lines = ["| round | leader writes | standby writes | SIGKILL -> Lease taken (s) | SIGKILL -> standby wrote (s) "
             "| SIGTERM -> Lease taken (s) | SIGTERM -> new leader wrote (s) |",
             "|---|---|---|---|---|---|---|"]
    lines += [row(str(i + 1), r) for i, r in enumerate(rounds)]
    if len(rounds) > 1:
        lines.append(row("**median**", median_row(rounds)))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ measuring

def _wait(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # noqa: BLE001 - a transient failure while polling
            pass
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def _writes(process) -> float:
    return sum(v for (name, labels), v in process.metrics().items()
               if name == "tei_operator_api_requests_total" and dict(labels)["method"] in WRITES
               and dict(labels)["resource"] != "leases")


def _identity(process) -> str:
    return next(dict(labels)["identity"] for (name, labels) in process.metrics() if name == "tei_operator_info")


class Bench:
    def __init__(self, cluster, workdir: Path) -> None:
        from tests.integration.conftest import Kube

        self.cluster = cluster
        self.kube = Kube(cluster)
        self.workdir = workdir
        self.namespace = f"bench-failover-{uuid.uuid4().hex[:6]}"
        self.count = 0

    def operator(self, name: str):
        from tests.integration.conftest import OperatorProcess

        process = OperatorProcess(str(self.cluster.kubeconfig), self.workdir / name, {
            "TEI_OPERATOR_NAMESPACES": self.namespace, "TEI_OPERATOR_RESYNC_SECONDS": "600",
            "TEI_OPERATOR_LEADER_ELECTION_LEASE_NAME": LEASE_NAME,
            "TEI_OPERATOR_LEADER_ELECTION_NAMESPACE": self.namespace})
        (self.workdir / name).mkdir(parents=True, exist_ok=True)
        process.start(timeout=90)
        return process

    def holder(self) -> str | None:
        lease = self.kube.get("lease", LEASE_NAME, self.namespace) or {}
        return (lease.get("spec") or {}).get("holderIdentity")

    def service(self) -> str:
        self.count += 1
        name = f"svc-{self.count}"
        self.kube.apply({"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
                         "metadata": {"name": name, "namespace": self.namespace}, "spec": SPEC})
        return name

    def deployment(self, name: str) -> bool:
        return self.kube.get("deployment", name, self.namespace) is not None

    def round(self, index: int) -> Round:
        a = self.operator(f"r{index}-a")
        _wait(lambda: self.holder() == _identity(a), 30, "replica A to lead")
        b = self.operator(f"r{index}-b")
        before_a, before_b = _writes(a), _writes(b)
        names = [self.service() for _ in range(3)]
        for name in names:
            _wait(lambda n=name: self.deployment(n), 60, f"Deployment {name}")
        self.kube.kubectl("patch", "embeddingservice", names[0], "-n", self.namespace, "--type=merge",
                          "-p", json.dumps({"spec": {"engine": {"maxBatchTokens": 4096 + index}}}))
        _wait(lambda: _writes(a) - before_a >= 2 * len(names) + 1, 60, "the update to be applied")
        leader_writes, standby_writes = _writes(a) - before_a, _writes(b) - before_b

        b_id = _identity(b)
        a.kill()
        killed = time.monotonic()
        name = self.service()
        _wait(lambda: self.holder() == b_id, 30, "B to take the Lease", interval=0.05)
        kill_to_lease = time.monotonic() - killed
        _wait(lambda: self.deployment(name), 30, "B to write", interval=0.05)
        kill_to_write = time.monotonic() - killed

        c = self.operator(f"r{index}-c")
        c_id = _identity(c)
        b.stop()
        stopped = time.monotonic()
        name = self.service()
        _wait(lambda: self.holder() == c_id, 30, "C to take the Lease", interval=0.05)
        term_to_lease = time.monotonic() - stopped
        _wait(lambda: self.deployment(name), 30, "C to write", interval=0.05)
        term_to_write = time.monotonic() - stopped
        c.stop()
        return Round(leader_writes, standby_writes, kill_to_lease, kill_to_write, term_to_lease, term_to_write)


def report(rounds: list[Round], command: str) -> str:
    med = median_row(rounds)
    return f"""# Failover of the operator's leader

Generated by `{command}` (bench/failover.py) on the local control plane (tests/cluster: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok nodes), {os.cpu_count()} CPU cores shared with other work, with the
chart's default leader election timing (Lease 8 s, renew deadline 6 s, retry 1 s). Every replica is a real
`tei-operator run` process.

{table(rounds)}

- **Writes while both ran**: the standby sent at most {max(r.standby_writes for r in rounds):.0f} writes in a
  round while the leader sent {med.leader_writes:.0f} (median) for 3 new services and one update, counted from each
  process's own `tei_operator_api_requests_total` (Lease requests left out).
- **SIGKILL of the leader** (no release): the standby held the Lease after {med.kill_to_lease:.1f} s and had
  written a new service's Deployment after {med.kill_to_write:.1f} s (median). The bound is the Lease duration
  plus two retry periods (10 s) plus the new leader's start; the requirement is 15 s.
- **SIGTERM of the leader** (a rolling update or drain): the leader releases the Lease and the standby takes it at
  its next read: {med.term_to_lease:.1f} s to the Lease, {med.term_to_write:.1f} s to its first write (median).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="kill/handover rounds (default 5)")
    parser.add_argument("--cluster", metavar="DIR", help="use the control plane running from DIR "
                        "(`python -m tests.cluster up --dir DIR`) instead of starting one")
    parser.add_argument("--no-report", action="store_true", help=f"print the table only, do not write {REPORT}")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    from tests.cluster import Cluster

    workdir = Path(tempfile.mkdtemp(prefix="tei-bench-failover-"))
    cluster = Cluster.attach(args.cluster) if args.cluster else Cluster(workdir / "cluster").start()
    try:
        bench = Bench(cluster, workdir)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        for crd in ("embeddingservices", "rerankerservices"):
            cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                            f"crd/{crd}.tei-operator.io")
        cluster.kubectl("create", "namespace", bench.namespace)
        rounds = []
        for i in range(args.rounds):
            rounds.append(bench.round(i + 1))
            print(row(str(i + 1), rounds[-1]), flush=True)
        print(table(rounds))
        if not args.no_report:
            command = "python -m bench.failover" + (f" --rounds {args.rounds}" if args.rounds != 5 else "")
            REPORT.write_text(report(rounds, command))
            print(f"wrote {REPORT.relative_to(ROOT)}")
        cluster.kubectl("delete", "namespace", bench.namespace, "--wait=false", check=False)
    finally:
        if not args.cluster:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
