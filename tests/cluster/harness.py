"""A real Kubernetes control plane on 127.0.0.1 for tests and local try-outs.

etcd, kube-apiserver (TLS, client certificates, RBAC, service-account keys), kube-controller-manager,
kube-scheduler and the kwok controller, all built from the Go module proxy by hack/build-tools.sh, started on free
ports in one directory. kwok simulates the nodes (see pools.py) and marks scheduled pods Running: no container runs.
Nothing listens on 0.0.0.0.

One implementation serves pytest (the `cluster` fixture in tests/conftest.py) and the command line
(`python -m tests.cluster up|down|env|status`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from . import netns, tools
from .pki import Pki
from .pools import DEFAULT_POOLS, NodePool

HOST = "127.0.0.1"
# Pod IPs: a /18 of 198.18.0.0/15 made local on lo in a private network namespace (Endpoints and EndpointSlices
# accept them, so Services route), or, where that namespace cannot be set up, a loopback /16 as a fallback. Either
# way each cluster takes its own block, and anything that talks to a "pod" stays on this machine. See netns.py.
POD_CIDR_FORMAT = netns.LOOPBACK_CIDR_FORMAT


def random_pod_cidr() -> str:
    """The pod CIDR for a new cluster (netns.next_pod_cidr: private range where local, else loopback)."""
    return netns.next_pod_cidr()


SERVICE_CIDR = "10.96.0.0/16"  # virtual addresses only; nothing connects to them
STAGES_FILE = Path(__file__).with_name("kwok-stages.yaml")

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Run in the child before exec: get SIGTERM when the Python process that started us dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # noqa: BLE001 - best effort; stop() still cleans up on normal exits
        pass


@dataclass
class ClusterState:
    """What `down`/`env` need to find a cluster again: written to DIR/state.json."""

    workdir: str
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    pools: list[dict] = field(default_factory=list)
    pod_cidr: str = ""
    netns: str = ""  # the network namespace the cluster runs in (/run/netns/NAME), "" for the caller's own


class ClusterError(RuntimeError):
    pass


class Cluster:
    """A local control plane. `start()` then `stop()`; or use it as a context manager."""

    COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

    def __init__(self, workdir: Path | str, pools: tuple[NodePool, ...] = DEFAULT_POOLS, *,
                 tie_to_parent: bool = True, pod_cidr: str | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.pools = tuple(pools)
        self.tie_to_parent = tie_to_parent
        self.procs: dict[str, subprocess.Popen] = {}
        pod_cidr = pod_cidr or random_pod_cidr()
        netns.check_pod_cidr(pod_cidr)
        self.state = ClusterState(workdir=str(self.workdir), pools=[asdict(p) for p in self.pools],
                                  pod_cidr=pod_cidr)
        self.timings: dict[str, float] = {}

    # ---------------------------------------------------------------- paths
    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def pod_cidr(self) -> str:
        return self.state.pod_cidr

    @property
    def api_url(self) -> str:
        return f"https://{HOST}:{self.state.ports['apiserver']}"

    def log_path(self, component: str) -> Path:
        return self.workdir / "logs" / f"{component}.log"

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 180) -> "Cluster":
        t0 = time.monotonic()
        binaries = {c: tools.binary(c) for c in self.COMPONENTS}
        binaries["kubectl"] = tools.binary("kubectl")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        ports = self.state.ports
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok-metrics"):
            ports[name] = free_port()
        pki = self._write_pki()
        try:
            self._start_etcd(binaries["etcd"])
            self._wait(lambda: self._http_ok(f"http://{HOST}:{ports['etcd']}/health"), timeout, "etcd")
            self.timings["etcd"] = time.monotonic() - t0
            self._start_apiserver(binaries["kube-apiserver"], pki)
            self._wait(self._api_ready, timeout, "kube-apiserver /readyz")
            self.timings["kube-apiserver"] = time.monotonic() - t0
            self._start_controllers(binaries, pki)
            self._create_nodes()
            self._wait(self._nodes_ready, timeout, "kwok to mark the nodes Ready")
            self._wait(self._default_service_account, timeout, "the default ServiceAccount (controller-manager)")
            self.timings["ready"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        self._save_state()
        return self

    def stop(self) -> None:
        """Stops everything this cluster started: children of this process, or pids from state.json."""
        pids = {name: p.pid for name, p in self.procs.items()} or dict(self.state.pids)
        for name in reversed(self.COMPONENTS):
            pid = pids.get(name)
            if pid:
                _terminate(pid)
        for name in reversed(self.COMPONENTS):
            pid = pids.get(name)
            if pid:
                _wait_gone(pid, 10)
        for p in self.procs.values():
            try:
                p.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        self.state.pids.clear()
        if (self.workdir / "state.json").exists():
            (self.workdir / "state.json").unlink()

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @classmethod
    def attach(cls, workdir: Path | str) -> "Cluster":
        """A handle on a cluster started by another process (`python -m tests.cluster up`)."""
        workdir = Path(workdir).resolve()
        state_file = workdir / "state.json"
        if not state_file.exists():
            raise ClusterError(f"no cluster state in {state_file}: is a cluster running from {workdir}?")
        state = ClusterState(**json.loads(state_file.read_text()))
        cluster = cls(workdir, tuple(NodePool(**p) for p in state.pools), tie_to_parent=False)
        cluster.state = state
        return cluster

    def alive(self) -> dict[str, bool]:
        pids = {name: p.pid for name, p in self.procs.items()} or self.state.pids
        return {name: _pid_alive(pid) for name, pid in pids.items()}

    # ---------------------------------------------------------------- helpers for tests
    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(tools.binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def apply(self, manifests: list[dict] | dict, *args: str) -> subprocess.CompletedProcess:
        docs = manifests if isinstance(manifests, list) else [manifests]
        return self.kubectl("apply", "-f", "-", *args, input=yaml.safe_dump_all(docs))

    def request(self, method: str, path: str, body: bytes | None = None, *,
                content_type: str = "application/json", timeout: float = 10) -> tuple[int, bytes]:
        """One HTTPS request to the API server as the admin (e.g. through its service or pod proxy): (status, body).
        HTTP errors are returned, not raised."""
        req = urllib.request.Request(self.api_url + path, data=body, method=method,
                                     headers={"Content-Type": content_type} if body is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl_context()) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    # ---------------------------------------------------------------- internals
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.log_path(name), "ab")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
            start_new_session=True, preexec_fn=_die_with_parent if self.tie_to_parent else None,
        )
        log.close()
        self.procs[name] = proc
        self.state.pids[name] = proc.pid
        self._save_state()

    def _save_state(self) -> None:
        (self.workdir / "state.json").write_text(json.dumps(asdict(self.state), indent=2))

    def _write_pki(self) -> dict[str, Path]:
        pki = Pki(self.workdir / "pki")
        server = pki.issue("apiserver", "kube-apiserver", server=True,
                           dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                "kubernetes.default.svc.cluster.local"),
                           ips=(HOST, "10.96.0.1"))
        sa_key, sa_pub = pki.service_account_keys()
        files = {"ca": pki.ca.cert, "ca-key": pki.ca.key, "apiserver-crt": server.cert, "apiserver-key": server.key,
                 "sa-key": sa_key, "sa-pub": sa_pub}
        # One client identity per component; the default RBAC bindings know the controller-manager's and the
        # scheduler's user names. kwok stands in for every kubelet, so it gets the admin group.
        identities = {
            "admin": ("kubernetes-admin", "system:masters"),
            "controller-manager": ("system:kube-controller-manager", None),
            "scheduler": ("system:kube-scheduler", None),
            "kwok": ("kwok-controller", "system:masters"),
        }
        for name, (cn, org) in identities.items():
            pair = pki.issue(f"client-{name}", cn, org)
            path = self.kubeconfig if name == "admin" else self.workdir / f"{name}.kubeconfig"
            self._write_kubeconfig(path, pki.ca.cert, pair.cert, pair.key, user=name)
            files[f"kubeconfig-{name}"] = path
        return files

    def _write_kubeconfig(self, path: Path, ca: Path, cert: Path, key: Path, user: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "tei-local", "cluster": {"server": self.api_url, "certificate-authority": str(ca)}}],
            "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
            "contexts": [{"name": "tei-local", "context": {"cluster": "tei-local", "user": user}}],
            "current-context": "tei-local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _start_etcd(self, etcd: Path) -> None:
        p = self.state.ports
        self._spawn("etcd", [
            str(etcd), "--name", "tei-local", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://{HOST}:{p['etcd']}",
            "--advertise-client-urls", f"http://{HOST}:{p['etcd']}",
            "--listen-peer-urls", f"http://{HOST}:{p['etcd-peer']}",
            "--initial-advertise-peer-urls", f"http://{HOST}:{p['etcd-peer']}",
            "--initial-cluster", f"tei-local=http://{HOST}:{p['etcd-peer']}",
            "--unsafe-no-fsync", "--quota-backend-bytes", str(2 * 1024**3), "--log-level", "warn",
        ])

    def _start_apiserver(self, binary: Path, pki: dict[str, Path]) -> None:
        p = self.state.ports
        self._spawn("kube-apiserver", [
            str(binary),
            f"--etcd-servers=http://{HOST}:{p['etcd']}",
            f"--bind-address={HOST}", f"--advertise-address={HOST}", f"--secure-port={p['apiserver']}",
            f"--tls-cert-file={pki['apiserver-crt']}", f"--tls-private-key-file={pki['apiserver-key']}",
            f"--client-ca-file={pki['ca']}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki['sa-pub']}",
            f"--service-account-signing-key-file={pki['sa-key']}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--endpoint-reconciler-type=none",
            "--v=1",
        ])

    def _start_controllers(self, binaries: dict[str, Path], pki: dict[str, Path]) -> None:
        p = self.state.ports
        kcm_kc = str(pki["kubeconfig-controller-manager"])
        self._spawn("kube-controller-manager", [
            str(binaries["kube-controller-manager"]),
            f"--kubeconfig={kcm_kc}", f"--authentication-kubeconfig={kcm_kc}",
            f"--authorization-kubeconfig={kcm_kc}",
            f"--bind-address={HOST}", f"--secure-port={p['controller-manager']}",
            f"--service-account-private-key-file={pki['sa-key']}", f"--root-ca-file={pki['ca']}",
            f"--cluster-signing-cert-file={pki['ca']}", f"--cluster-signing-key-file={pki['ca-key']}",
            "--leader-elect=false", "--use-service-account-credentials=true",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--concurrent-deployment-syncs=5", "--concurrent-gc-syncs=10",
            "--v=1",
        ])
        sched_kc = str(pki["kubeconfig-scheduler"])
        self._spawn("kube-scheduler", [
            str(binaries["kube-scheduler"]),
            f"--kubeconfig={sched_kc}", f"--authentication-kubeconfig={sched_kc}",
            f"--authorization-kubeconfig={sched_kc}",
            f"--bind-address={HOST}", f"--secure-port={p['scheduler']}",
            "--leader-elect=false", "--v=1",
        ])
        self._spawn("kwok", [
            str(binaries["kwok"]),
            f"--kubeconfig={pki['kubeconfig-kwok']}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--node-ip={HOST}",
            f"--cidr={self.state.pod_cidr}",
            "--node-lease-duration-seconds=40",
            f"--config={STAGES_FILE}",
        ])

    def _create_nodes(self) -> None:
        nodes = [n for pool in self.pools for n in pool.manifests()]
        if nodes:
            # `create` keeps the status (capacity) we give; kwok then marks each node Ready.
            self.kubectl("create", "-f", "-", input=yaml.safe_dump_all(nodes))

    # ---------------------------------------------------------------- readiness probes
    def _wait(self, probe, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, ok in self.alive().items() if not ok]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}; "
                                   f"last log lines:\n{self._tail(dead[0])}")
            try:
                if probe():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.25)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.workdir / 'logs'}")

    def _tail(self, component: str, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path(component).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @staticmethod
    def _http_ok(url: str) -> bool:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.workdir / "pki" / "ca.crt"))
        ctx.load_cert_chain(str(self.workdir / "pki" / "client-admin.crt"), str(self.workdir / "pki" / "client-admin.key"))
        return ctx

    def _get(self, path: str) -> dict | str:
        with urllib.request.urlopen(self.api_url + path, timeout=5, context=self._ssl_context()) as r:
            body = r.read().decode()
            return json.loads(body) if body.startswith("{") else body

    def _api_ready(self) -> bool:
        return self._get("/readyz") == "ok"

    def _nodes_ready(self) -> bool:
        want = {n for pool in self.pools for n in pool.node_names()}
        ready = set()
        for node in self._get("/api/v1/nodes")["items"]:
            # The node lifecycle controller taints new nodes not-ready until it sees them Ready: wait for that too,
            # so that the first pod of a test is scheduled at once.
            taints = {t["key"] for t in node.get("spec", {}).get("taints", [])}
            if taints & {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}:
                continue
            for cond in node.get("status", {}).get("conditions", []):
                if cond["type"] == "Ready" and cond["status"] == "True":
                    ready.add(node["metadata"]["name"])
        return want <= ready

    def _default_service_account(self) -> bool:
        self._get("/api/v1/namespaces/default/serviceaccounts/default")
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists": look at its state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _terminate(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m tests.cluster up|down|env|status")
