"""The TEI emulator standing in for each pod of the simulated cluster.

kwok marks pods Running and gives them IPs from the cluster's pod CIDR (198.18.0.0/15 made local in a private
network namespace, or loopback 127.N.x.y as the fallback: see netns.py) but runs nothing. This runner watches the pods
(polling every 0.5 s) and, for each Running pod with a podIP, starts one emulator process bound to that IP on the
pod's container port (80: we run as root), configured from the pod's TEI container env (MODEL_ID, MAX_BATCH_TOKENS,
MAX_CONCURRENT_REQUESTS, ...) plus the runner's test knobs (tokens/s, model-loading seconds). It stops the process
when the pod goes away or starts terminating.

Pods annotated `sim.tei-operator.io/model-sha` report that sha in /info (`per-pod`: one derived from the pod's
name). Pods annotated `sim.tei-operator.io/readiness: external` stay Running but not Ready under kwok; the runner marks
them Ready (Ready/ContainersReady conditions and containerStatuses[].ready, through the status subresource) once
their emulator answers /health, so "pods still loading their model" really happens.

It writes a Prometheus file_sd targets file (`[{targets: ["IP:PORT"], labels: {namespace, pod, service}}]`) for
the pods whose emulator is listening.

Use it from pytest (`with EmulatedPods(kubeconfig, ...) as pods: pods.urls()`) or as a command:
    python -m tests.cluster.emulated_pods --kubeconfig K --selector app.kubernetes.io/managed-by=tei-operator \
        [--prometheus-targets FILE] [--tokens-per-second N] [--load-seconds S]
Everything it starts stops when it stops (processes also die with it: PR_SET_PDEATHSIG). Local addresses only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tei_operator.kube import POD, KubeClient

from . import netns

log = logging.getLogger("tests.cluster.emulated_pods")

READINESS_ANNOTATION = "sim.tei-operator.io/readiness"
# The model commit the pod's emulator reports in /info: a 40-hex sha, or `per-pod` for one derived from the pod's
# name (each replica "downloaded" a different commit, as unpinned replicas can).
MODEL_SHA_ANNOTATION = "sim.tei-operator.io/model-sha"
SERVICE_LABEL = "tei-operator.io/service"
POLL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # noqa: BLE001 - best effort; stop() cleans up on normal exits
        pass


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_env(pod: Mapping[str, Any]) -> dict[str, str]:
    """The TEI container's plain env values (secret references are skipped: the emulator needs none)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    tei = next((c for c in containers if c.get("name") == "tei"), containers[0] if containers else {})
    return {e["name"]: str(e["value"]) for e in tei.get("env") or [] if "value" in e}


def container_port(pod: Mapping[str, Any]) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("containerPort"):
                return int(port["containerPort"])
    return 80


def owns_listener(pid: int, ip: str, port: int) -> bool:
    """Whether process `pid` holds the listening TCP socket on ip:port (Linux /proc): the socket's inode from
    /proc/net/tcp must be one of the process's file descriptors."""
    want = f"{int.from_bytes(ipaddress.IPv4Address(ip).packed, 'little'):08X}:{port:04X}"
    inodes = set()
    try:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[1] == want and fields[3] == "0A":  # 0A = LISTEN
                inodes.add(fields[9])
        if not inodes:
            return False
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    except OSError:
        return False
    return False


def is_ready(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


@dataclass
class Emulated:
    """One pod's emulator process."""

    uid: str
    namespace: str
    name: str
    service: str
    ip: str
    port: int
    proc: subprocess.Popen
    external_readiness: bool
    started: float = field(default_factory=time.monotonic)
    healthy: bool = False
    marked_ready: bool = False
    collision_logged: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"


class EmulatedPods:
    """Watches pods and keeps one emulator per Running pod. `start()`/`stop()`, or a context manager; runs in a
    background thread with its own event loop, so synchronous and asynchronous tests can both use it."""

    def __init__(self, kubeconfig: str, selector: str = "app.kubernetes.io/managed-by=tei-operator", *,
                 targets_file: str | Path | None = None, tokens_per_second: float | None = None,
                 load_seconds: float = 0.0, log_dir: str | Path | None = None,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.selector = selector
        self.targets_file = Path(targets_file) if targets_file else None
        self.tokens_per_second = tokens_per_second
        self.load_seconds = load_seconds
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="tei-emulated-pods-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.extra_env = dict(extra_env or {})
        self.pods: dict[str, Emulated] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._last_targets: str | None = None

    # -- public ----------------------------------------------------------------------------------------------
    def start(self) -> "EmulatedPods":
        self._thread = threading.Thread(target=self._thread_main, name="emulated-pods", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error:
            raise RuntimeError(f"emulated pods failed to start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
        self._stop_all()

    def __enter__(self) -> "EmulatedPods":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def urls(self, namespace: str | None = None, service: str | None = None) -> list[str]:
        """Base URLs of the emulators that answer /health (what a Service would route to)."""
        with self._lock:
            return sorted(e.url for e in self.pods.values() if e.healthy and e.proc.poll() is None
                          and (namespace is None or e.namespace == namespace)
                          and (service is None or e.service == service))

    # -- the loop ----------------------------------------------------------------------------------------------
    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
            self._error = exc
            self._started.set()
            log.error("Emulated pods stopped on an error: %s", exc)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        kube = KubeClient.from_environment(self.kubeconfig)
        self._started.set()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
                while not self._stop.is_set():
                    try:
                        await self._sync(kube, session)
                    except Exception as exc:  # noqa: BLE001 - a failed poll is retried
                        log.warning("Failed to sync emulated pods: %s", exc)
                    try:
                        await asyncio.wait_for(self._stop.wait(), POLL_SECONDS)
                    except asyncio.TimeoutError:
                        pass
        finally:
            kube.close()

    async def _sync(self, kube: KubeClient, session: aiohttp.ClientSession) -> None:
        pods = await kube.list(POD, None, label_selector=self.selector)
        wanted: dict[str, Mapping[str, Any]] = {}
        for pod in pods:
            meta, status = pod.get("metadata") or {}, pod.get("status") or {}
            ip = status.get("podIP")
            if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not ip:
                continue
            if not netns.is_pod_address(ip):
                log.warning("Skipped pod %s/%s: IP %s is neither a loopback address nor in %s", meta.get("namespace"),
                            meta.get("name"), ip, netns.POD_SUPERNET)
                continue
            wanted[meta["uid"]] = pod
        for uid in [u for u in self.pods if u not in wanted or self.pods[u].proc.poll() is not None]:
            self._stop_one(uid)
        for uid, pod in wanted.items():
            if uid not in self.pods:
                self._start_one(pod)
        await asyncio.gather(*(self._check(kube, session, e, wanted[e.uid]) for e in list(self.pods.values())))
        self._write_targets()

    def _start_one(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        ip, port = pod["status"]["podIP"], container_port(pod)
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "HOME", "LANG", "VIRTUAL_ENV")}
        env.update(container_env(pod))
        env.update({"PORT": str(port), "EMULATOR_HOST": ip, "EMULATOR_SHUTDOWN_TIMEOUT": "2",
                    "EMULATOR_LOAD_SECONDS": str(self.load_seconds), "JSON_OUTPUT": "false"})
        if self.tokens_per_second:
            env["EMULATOR_TOKENS_PER_SECOND"] = str(self.tokens_per_second)
        model_sha = (meta.get("annotations") or {}).get(MODEL_SHA_ANNOTATION)
        if model_sha:
            env["EMULATOR_MODEL_SHA"] = (hashlib.sha1(meta["name"].encode()).hexdigest() if model_sha == "per-pod"
                                         else model_sha)
        env.update(self.extra_env)
        log_path = self.log_dir / f"{meta['namespace']}_{meta['name']}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "tei_operator.emulator"], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        external = (meta.get("annotations") or {}).get(READINESS_ANNOTATION) == "external"
        with self._lock:
            self.pods[meta["uid"]] = Emulated(meta["uid"], meta["namespace"], meta["name"],
                                              (meta.get("labels") or {}).get(SERVICE_LABEL, ""), ip, port, proc,
                                              external)
        log.info("Started emulator for pod %s/%s on %s:%d", meta["namespace"], meta["name"], ip, port)

    def _stop_one(self, uid: str) -> None:
        with self._lock:
            emulated = self.pods.pop(uid, None)
        if emulated is None:
            return
        _terminate(emulated.proc)
        log.info("Stopped emulator of pod %s/%s", emulated.namespace, emulated.name)

    def _stop_all(self) -> None:
        for uid in list(self.pods):
            self._stop_one(uid)
        self._write_targets()

    async def _check(self, kube: KubeClient, session: aiohttp.ClientSession, emulated: Emulated,
                     pod: Mapping[str, Any]) -> None:
        """Health of the emulator; for external-readiness pods, mark the pod Ready once it answers."""
        if not emulated.healthy:
            try:
                async with session.get(f"{emulated.url}/health") as response:
                    answered = response.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                return
            # The answer must come from our process: another simulated cluster on this machine may hand out the
            # same loopback IPs, and its emulator would then answer for our pod.
            emulated.healthy = answered and owns_listener(emulated.proc.pid, emulated.ip, emulated.port)
            if answered and not emulated.healthy and not emulated.collision_logged:
                emulated.collision_logged = True
                log.warning("Pod %s/%s: %s:%d is served by another process, not its emulator (another simulated "
                            "cluster using the same pod IPs?)", emulated.namespace, emulated.name, emulated.ip,
                            emulated.port)
            if not emulated.healthy:
                return
        if emulated.healthy and emulated.external_readiness and not emulated.marked_ready:
            if is_ready(pod):
                emulated.marked_ready = True
                return
            await self._mark_ready(kube, pod)
            emulated.marked_ready = True
            log.info("Marked pod %s/%s Ready: its emulator answers /health", emulated.namespace, emulated.name)

    @staticmethod
    async def _mark_ready(kube: KubeClient, pod: Mapping[str, Any]) -> None:
        meta, status = pod["metadata"], pod.get("status") or {}
        now = _now()
        statuses = []
        for cs in status.get("containerStatuses") or []:
            statuses.append({**cs, "ready": True, "started": True})
        patch = {"status": {
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now},
                           {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": statuses,
        }}
        await kube.patch(POD, meta["name"], meta["namespace"], patch,
                         content_type="application/strategic-merge-patch+json", subresource="status")

    def _write_targets(self) -> None:
        if self.targets_file is None:
            return
        with self._lock:
            targets = [{"targets": [f"{e.ip}:{e.port}"],
                        "labels": {"namespace": e.namespace, "pod": e.name, "service": e.service}}
                       for e in sorted(self.pods.values(), key=lambda e: (e.namespace, e.name)) if e.healthy]
        text = json.dumps(targets, indent=1)
        if text == self._last_targets or (not targets and not self.targets_file.exists()):
            return  # (no file until there is a target: `make demo` waits for a non-empty file)
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.targets_file)  # atomic: Prometheus never reads half a file
        self._last_targets = text


def _terminate(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.emulated_pods",
                                     description="Run one TEI emulator per Running pod of the simulated cluster.")
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of the cluster")
    parser.add_argument("--selector", default="app.kubernetes.io/managed-by=tei-operator",
                        help="label selector of the pods to stand in for")
    parser.add_argument("--prometheus-targets", help="write a Prometheus file_sd targets file here")
    parser.add_argument("--tokens-per-second", type=float, help="modelled GPU throughput per pod")
    parser.add_argument("--load-seconds", type=float, default=0.0, help="modelled model-loading time per pod")
    parser.add_argument("--log-dir", help="directory for the emulators' logs (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.tokens_per_second is not None and args.tokens_per_second <= 0:
        parser.error(f"--tokens-per-second: must be greater than 0, got {args.tokens_per_second}")
    if args.load_seconds < 0:
        parser.error(f"--load-seconds: must be 0 or more, got {args.load_seconds}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pods = EmulatedPods(args.kubeconfig, args.selector, targets_file=args.prometheus_targets,
                        tokens_per_second=args.tokens_per_second, load_seconds=args.load_seconds,
                        log_dir=args.log_dir)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    pods.start()
    log.info("Started emulated pods for %s (logs in %s)", args.selector, pods.log_dir)
    try:
        while not stop.wait(1):
            pass
    finally:
        pods.stop()
        log.info("Stopped emulated pods")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
