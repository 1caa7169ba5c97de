"""Leader election on a coordination.k8s.io/v1 Lease: of the operator replicas, exactly one reconciles and scales.

The algorithm is the one Kubernetes' own controllers use (client-go's leaderelection), written here over the
project's KubeClient:

- Every replica reads the Lease each `retry_period`. A replica may take it when nobody holds it, when it holds it
  itself, or when the holder's record has not changed for `lease_duration` seconds *as measured by the reader's
  own clock since it saw the record change* (no clock comparison between machines). It takes or renews the Lease
  with a PUT carrying the resourceVersion it read, so of two replicas racing for it one gets 409 and stays standby.
- The leader renews every `retry_period` with a single PUT of the Lease as its own last write returned it (the
  resourceVersion of that write), without reading it first (client-go's leaderelection does the same): the PUT
  succeeds only if nobody wrote the Lease since, i.e. it still holds it; on 409 it reads the Lease and decides as a
  standby would. One request per renewal instead of a GET and a PUT: 60 Lease requests a minute at the default
  1 s period, not 120. Its leadership ends `renew_deadline` seconds after the send time of its
  last successful renewal (renew_deadline < lease_duration): from then on `is_leader()` is False, the KubeClient's
  write guard refuses every write before sending it, and the runner stops the controller and autoscaler and stands
  by again. A standby can take over no earlier than `lease_duration` after it *saw* that renewal, which is later,
  so the two never write at once.
- A leader that stops cleanly (SIGTERM) releases the Lease (empty holder), and a standby takes over at its next
  read (within `retry_period`). A leader that dies (SIGKILL, node lost) is replaced within lease_duration + 2 x
  retry_period, plus the time the new leader's controller takes to start.

Why not kopf's peering: it pauses operators of lower priority, but two replicas of one Deployment have the same
priority, and kopf then pauses all of them (itself included) until the conflict is gone; a paused replica resumes
only when the other's peering record expires (60 s lifetime by default); it needs kopf's own CRDs; and it does not
pause the autoscaler, which is not a kopf handler. A Lease gives one writer and a takeover in seconds with a
built-in kind.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..kube import KubeApiError, KubeClient, ResourceType
from ..metrics import METRICS, OperatorMetrics

logger = logging.getLogger("tei_operator.leader")

LEASE = ResourceType("coordination.k8s.io", "v1", "leases", "Lease")
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
LEASE_CONNECTIONS = 2  # the Lease client reads and writes one object: a get and a put at most in flight


def micro_time(epoch: float) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds), as Lease renewTime/acquireTime hold."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def own_identity() -> str:
    """This replica's name in the Lease: the pod name (the hostname in a pod) and a random suffix, so a restarted
    process never mistakes its predecessor's lease for its own."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def lease_namespace(configured: str) -> str:
    """The Lease's namespace: the setting, else the pod's own namespace, else `default` (outside a cluster)."""
    if configured:
        return configured
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as handle:
            found = handle.read().strip()
            if found:
                return found
    except OSError:
        pass
    return os.environ.get("POD_NAMESPACE") or "default"


@dataclass(frozen=True)
class LeaseConfig:
    """Where the Lease is and how fast the election moves (see the module docstring)."""

    name: str
    namespace: str
    identity: str
    lease_duration: float = 8.0
    renew_deadline: float = 6.0
    retry_period: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < 1.2 * self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("lease timing: need 0 < 1.2 x retry_period < renew_deadline < lease_duration, got "
                             f"{self.retry_period:g}, {self.renew_deadline:g}, {self.lease_duration:g}")

    @classmethod
    def from_settings(cls, settings: Any, identity: str | None = None) -> "LeaseConfig":
        return cls(name=settings.leader_election_lease_name,
                   namespace=lease_namespace(settings.leader_election_namespace),
                   identity=identity or own_identity(),
                   lease_duration=float(settings.leader_election_lease_duration_seconds),
                   renew_deadline=float(settings.leader_election_renew_deadline_seconds),
                   retry_period=float(settings.leader_election_retry_period_seconds))


class LeaderElector:
    """Takes, keeps and releases the Lease for one replica. `is_leader()` is exact at any moment (the write guard
    asks it before every write); `acquire()` waits for leadership, `keep()` renews until it is lost."""

    def __init__(self, kube: KubeClient, config: LeaseConfig, *, metrics: OperatorMetrics = METRICS,
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.config = config
        self.metrics = metrics
        self._monotonic = monotonic
        self._wall = wall
        self._renewed_at: float | None = None    # send time of our last successful take/renew (monotonic)
        self._observed_version: str | None = None
        self._observed_at = 0.0                  # when we saw the record change (monotonic)
        self.holder: str | None = None           # who held the Lease at our last read
        self.last_contact: float | None = None   # last successful round trip to the API server (monotonic)
        self._held: dict | None = None           # the Lease as our last successful take/renew returned it
        kube.register(LEASE)

    @property
    def identity(self) -> str:
        return self.config.identity

    @property
    def where(self) -> str:
        return f"{self.config.namespace}/{self.config.name}"

    def is_leader(self) -> bool:
        """True until `renew_deadline` after the send time of the last successful renewal."""
        return self._renewed_at is not None and self._monotonic() < self._renewed_at + self.config.renew_deadline

    def healthy(self) -> bool:
        """Reached the API server within the lease duration: able to lead or to take over (readiness)."""
        return self.last_contact is not None and \
            self._monotonic() - self.last_contact < self.config.lease_duration

    # -- one round ------------------------------------------------------------------------------------------------
    async def try_acquire_or_renew(self) -> bool:
        """Read the Lease and take or renew it when allowed. True: this replica leads (until `is_leader()` says
        otherwise). Raises KubeApiError when the API server fails (the caller retries)."""
        sent = self._monotonic()
        now = self._wall()
        cfg = self.config
        if self._held is not None and self.is_leader():
            renewed = await self._renew_held(sent, now)
            if renewed:
                return True
        lease = await self.kube.get_or_none(LEASE, cfg.name, cfg.namespace)
        self.last_contact = self._monotonic()
        if lease is None:
            body = {"apiVersion": LEASE.api_version, "kind": LEASE.kind,
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                    "spec": self._spec(now, {}, taking=True)}
            try:
                created = await self.kube.create(body)
            except KubeApiError as exc:
                if exc.conflict:  # another replica created it first
                    return False
                raise
            return self._took(sent, created)
        meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
        version = str(meta.get("resourceVersion", ""))
        if version != self._observed_version:
            self._observed_version = version
            self._observed_at = self.last_contact
        holder = spec.get("holderIdentity") or None
        self.holder = holder
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        if holder and holder != cfg.identity and self._monotonic() < self._observed_at + duration:
            if self._renewed_at is not None:  # someone else holds it: whatever we thought, we do not lead
                self._renewed_at = None
            self._held = None
            return False
        lease["spec"] = self._spec(now, spec, taking=holder != cfg.identity)
        try:
            updated = await self.kube.request("PUT", LEASE.path(cfg.namespace, cfg.name), body=lease)
        except KubeApiError as exc:
            if exc.conflict:  # someone wrote the Lease since our read: read again next round
                return False
            raise
        if holder != cfg.identity:
            logger.info("Took the leader Lease %s from %s", self.where, holder or "nobody")
        return self._took(sent, updated)

    async def _renew_held(self, sent: float, now: float) -> bool:
        """The leader's renewal without a read: PUT the Lease we last wrote, at the resourceVersion that write
        returned. False on 409 (someone wrote it since: the caller reads it and decides); other errors raise."""
        cfg = self.config
        lease = dict(self._held or {})
        lease["spec"] = self._spec(now, lease.get("spec") or {}, taking=False)
        try:
            updated = await self.kube.request("PUT", LEASE.path(cfg.namespace, cfg.name), body=lease)
        except KubeApiError as exc:
            if exc.conflict:
                self._held = None
                return False
            raise
        self.last_contact = self._monotonic()
        return self._took(sent, updated)

    def _spec(self, now: float, old: dict, *, taking: bool) -> dict:
        spec = dict(old)
        spec.update({"holderIdentity": self.config.identity,
                     "leaseDurationSeconds": max(1, int(round(self.config.lease_duration))),
                     "renewTime": micro_time(now)})
        if taking:
            spec["acquireTime"] = micro_time(now)
            spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + (1 if old else 0)
        return spec

    def _took(self, sent: float, lease: dict | None) -> bool:
        self._renewed_at = sent
        self.holder = self.config.identity
        self._held = lease or None
        if lease:
            self._observed_version = str((lease.get("metadata") or {}).get("resourceVersion", ""))
            self._observed_at = self._monotonic()
        return True

    # -- loops ----------------------------------------------------------------------------------------------------
    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Read the Lease every retry period until this replica leads (True) or `stopping` is set (False)."""
        waiting_logged: str | None = None
        failures = 0
        while not stopping.is_set():
            try:
                if await self.try_acquire_or_renew():
                    self.metrics.set_leader(True)
                    logger.info("Became the leader (%s) on Lease %s", self.identity, self.where)
                    return True
                failures = 0
                if self.holder != waiting_logged:
                    waiting_logged = self.holder
                    logger.info("Standing by: Lease %s is held by %s (this replica is %s)", self.where,
                                self.holder, self.identity)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep standing by; the next read may succeed
                failures += 1
                level = logging.WARNING if failures in (1, 10) or failures % 60 == 0 else logging.DEBUG
                logger.log(level, "Failed to read the leader Lease %s (%d in a row): %s", self.where, failures, exc)
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self.config.retry_period)
            except TimeoutError:
                pass
        return False

    async def keep(self, lost: asyncio.Event) -> None:
        """Renew every retry period while leading; set `lost` as soon as leadership ends (renewals failed until the
        deadline, or another replica holds the Lease). Cancel it to stop renewing."""
        cfg = self.config
        while self.is_leader():
            await asyncio.sleep(cfg.retry_period)
            remaining = (self._renewed_at or 0) + cfg.renew_deadline - self._monotonic()
            if remaining <= 0:
                break
            try:
                # asyncio.timeout, not wait_for: no extra task, which kopf would cancel as one of its own at exit
                async with asyncio.timeout(remaining):
                    await self.try_acquire_or_renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever failed, the deadline decides; `lost` must be set
                logger.warning("Failed to renew the leader Lease %s: %s", self.where,
                               "timed out" if isinstance(exc, TimeoutError) else exc)
        self._renewed_at = None
        self.metrics.set_leader(False)
        logger.error("Lost the leader Lease %s (held by %s): stopped writing, standing by", self.where,
                     self.holder or "nobody known")
        lost.set()

    async def release(self) -> None:
        """Give the Lease up (empty holder) if this replica leads, so a standby takes over at its next read."""
        was_leader = self.is_leader()
        self._renewed_at = None
        self._held = None
        self.metrics.set_leader(False)
        if not was_leader:
            return
        cfg = self.config
        try:
            lease = await self.kube.get(LEASE, cfg.name, cfg.namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != cfg.identity:
                return
            spec.update({"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": micro_time(self._wall())})
            lease["spec"] = {k: v for k, v in spec.items() if v is not None}
            await self.kube.request("PUT", LEASE.path(cfg.namespace, cfg.name), body=lease)
            logger.info("Released the leader Lease %s", self.where)
        except KubeApiError as exc:
            logger.warning("Failed to release the leader Lease %s (a standby takes over after %.0f s): %s",
                           self.where, cfg.lease_duration, exc)


def lease_client(timeout: float) -> KubeClient:
    """A KubeClient of its own for the Lease: its own small connection pool, so a renewal never waits for a
    connection behind a burst of the controller's calls, and a short timeout."""
    return KubeClient.from_environment(timeout=timeout, pool_size=LEASE_CONNECTIONS)
