"""The one small Kubernetes client of the operator.

Everything that talks to the API server goes through `KubeClient`: the controller and the autoscaler share it, so
authentication, server-side apply and error decoding live in one place. It works on plain dicts (rendered
manifests, kopf bodies) and sends the content types the generated per-kind clients do not offer
(`application/apply-patch+yaml`, `application/merge-patch+json`). The transport is asyncio-native
(kube_transport.py: aiohttp, one connection pool, credentials read by kube_credentials.py): no request holds a
thread, so concurrency is bounded by the pool's connections, not by an executor's workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import socket
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from .kube_errors import KubeApiError, NotLeaderError, error_from_response
from .kube_events import EventKey, RecentEvents, event_key, event_name, event_namespace, new_event, repeat_patch
from .kube_retry import retry_on_conflict
from .kube_credentials import Credentials, CredentialSource
from .kube_transport import DEFAULT_POOL_SIZE, ApiTransport, source_for
from .metrics import METRICS, WRITE_METHODS

logger = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"  # JSON is valid YAML: the body is sent as JSON
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
DEFAULT_TIMEOUT_SECONDS = 30.0
EVENT_WRITE_ATTEMPTS = 5  # create/patch rounds for one event before giving up (each lost round means another wrote)


@dataclasses.dataclass(frozen=True)
class ResourceType:
    """Where a kind lives in the API: enough to build its URLs without a discovery round trip."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of the collection (no name) or of one object (and optionally one of its subresources)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        elif self.namespaced and name is not None:
            raise ValueError(f"{self.kind} {name!r} is namespaced: a namespace is required")
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


DEPLOYMENT = ResourceType("apps", "v1", "deployments", "Deployment")
REPLICASET = ResourceType("apps", "v1", "replicasets", "ReplicaSet")
POD = ResourceType("", "v1", "pods", "Pod")
SERVICE = ResourceType("", "v1", "services", "Service")
EVENT = ResourceType("", "v1", "events", "Event")
NODE = ResourceType("", "v1", "nodes", "Node", namespaced=False)
NAMESPACE = ResourceType("", "v1", "namespaces", "Namespace", namespaced=False)
PDB = ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
NETWORK_POLICY = ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")
JOB = ResourceType("batch", "v1", "jobs", "Job")
PVC = ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
CRD = ResourceType(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False
)

_BUILTIN_TYPES = (DEPLOYMENT, REPLICASET, POD, SERVICE, EVENT, NODE, NAMESPACE, PDB, NETWORK_POLICY, JOB, PVC,
                  CRD)


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeClient:
    """A small async Kubernetes client over plain dicts.

    Build it with `KubeClient.from_environment()` (kubeconfig from $KUBECONFIG / ~/.kube/config, or the in-cluster
    service account), `KubeClient.for_host(url)` (no credentials: a plain-HTTP test server), or pass an
    `ApiTransport`. Kinds are found by (apiVersion, kind) in a small table of built-ins plus whatever `register()`
    adds (the operator registers its custom kinds).

    `write_guard`, when set, is asked before every write (POST, PUT, PATCH, DELETE): False refuses the write with
    `NotLeaderError`, without sending it (the leader election fences a replica that lost the Lease this way).
    Every request is bounded by `timeout` seconds in all and counted in `metrics.METRICS`. Close it with
    `await kube.close()` (a synchronous caller may call `kube.close()` without awaiting).
    """

    def __init__(self, transport: ApiTransport, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self._transport = transport
        self._timeout = timeout
        self.write_guard: Any = None
        self._types: dict[tuple[str, str], ResourceType] = {}
        self._recent_events = RecentEvents()  # lets a repeated Event be counted with one request
        # Dropped as soon as no write holds or waits for them, so this does not grow with the Events written.
        self._event_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()
        for rtype in _BUILTIN_TYPES:
            self.register(rtype)

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                         pool_size: int = DEFAULT_POOL_SIZE) -> "KubeClient":
        """Load credentials: an explicit kubeconfig, else $KUBECONFIG or ~/.kube/config, else the in-cluster
        service account. Reads files, so call it at start-up, never at import. `pool_size` bounds the
        connections to the API server (setting TEI_OPERATOR_API_CONNECTIONS for the operator)."""
        return cls(ApiTransport(source_for(kubeconfig), pool_size=pool_size), timeout=timeout)

    @classmethod
    def for_host(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 pool_size: int = DEFAULT_POOL_SIZE) -> "KubeClient":
        """A client of the server at `url` without credentials (tests, a local `kubectl proxy`)."""
        return cls(ApiTransport(Credentials(server=url), pool_size=pool_size), timeout=timeout)

    @property
    def credentials(self) -> CredentialSource:
        """Where this client's credentials come from (kopf logs in with the same ones, controller/runner.py)."""
        return self._transport.source

    def close(self) -> Any:
        """Close the connection pool; `await` the result in async code to wait until its sockets are closed."""
        return self._transport.close()

    def register(self, rtype: ResourceType) -> None:
        """Make a kind known (custom resources, or built-ins missing from the table)."""
        self._types[(rtype.api_version, rtype.kind)] = rtype

    def resource_type(self, api_version: str, kind: str) -> ResourceType:
        try:
            return self._types[(api_version, kind)]
        except KeyError:
            known = ", ".join(sorted(f"{k} ({v})" for v, k in self._types))
            raise ValueError(f"Unknown kind {kind} in {api_version}; known kinds: {known}") from None

    def _type_of(self, manifest: Mapping[str, Any]) -> ResourceType:
        api_version, kind = manifest.get("apiVersion"), manifest.get("kind")
        if not api_version or not kind:
            raise ValueError("manifest needs apiVersion and kind")
        return self.resource_type(str(api_version), str(kind))

    # -- the raw call -------------------------------------------------------------------------------------------
    async def _send(self, method: str, path: str, *, query: Mapping[str, Any] | None, body: Any,
                    content_type: str | None, accept: str, timeout: float | None) -> tuple[bytes, str]:
        """Send one request; returns the body of a 2xx answer and its Content-Type, raises `KubeApiError` for
        anything else (status 0: not reached, or no answer within the timeout). Counted in the metrics."""
        method = method.upper()
        if self.write_guard is not None and method in WRITE_METHODS and not self.write_guard():
            raise NotLeaderError(f"{method} {path}")
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        url_path = path + ("?" + urlencode(params) if params else "")
        headers = {"Accept": accept}
        data: bytes | None = None
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
            data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        described = f"{method} {url_path}"
        limit = self._timeout if timeout is None else timeout
        try:
            response = await self._transport.send(method, url_path, headers=headers, data=data, timeout=limit)
        except Exception as exc:  # noqa: BLE001 - connection errors, timeouts, credentials that failed to load
            METRICS.api_request(method, path, 0)
            text = f"no answer within {limit:g} s" if isinstance(exc, asyncio.TimeoutError) else \
                f"{type(exc).__name__}: {exc}"
            raise KubeApiError(0, "Unreachable", text, request=described) from exc
        METRICS.api_request(method, path, response.status)
        if not 200 <= response.status <= 299:
            raise error_from_response(response.status, response.reason, response.body, response.headers,
                                       described)
        return response.body, response.headers.get("Content-Type", "")

    async def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
                      content_type: str | None = None, timeout: float | None = None) -> Any:
        """One API call; returns the decoded JSON body (None when empty), raises `KubeApiError` (or
        `NotLeaderError` for a write the `write_guard` refuses). `timeout` overrides the client's for this call."""
        data, _ = await self._send(method, path, query=query, body=body, content_type=content_type,
                                   accept="application/json", timeout=timeout)
        if not data:
            return None
        return json.loads(data)

    async def get_text(self, path: str, *, timeout: float | None = None,
                       accept: str = "text/plain, */*") -> tuple[str, str]:
        """A GET of a non-JSON body (a pod's /metrics through the API server's proxy): one attempt within
        `timeout` seconds. Returns (text, Content-Type)."""
        data, content_type = await self._send("GET", path, query=None, body=None, content_type=None,
                                              accept=accept, timeout=timeout)
        return data.decode("utf-8", "replace"), content_type

    # -- verbs --------------------------------------------------------------------------------------------------
    async def get(self, rtype: ResourceType, name: str, namespace: str | None = None,
                  *, subresource: str | None = None) -> dict:
        return await self.request("GET", rtype.path(namespace, name, subresource))

    async def get_or_none(self, rtype: ResourceType, name: str, namespace: str | None = None) -> dict | None:
        """The object, or None when it does not exist (the common 'does it exist yet' question)."""
        try:
            return await self.get(rtype, name, namespace)
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise

    async def list(self, rtype: ResourceType, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> list[dict]:
        """All objects of a kind (in one namespace, or everywhere when namespace is None), following pagination."""
        items: list[dict] = []
        token: str | None = None
        while True:
            result = await self.request(
                "GET", rtype.path(namespace),
                query={"labelSelector": label_selector, "fieldSelector": field_selector, "limit": 500,
                       "continue": token},
            )
            for item in result.get("items") or []:
                # Items of a list carry no apiVersion/kind: add them so callers can treat them as manifests.
                item.setdefault("apiVersion", rtype.api_version)
                item.setdefault("kind", rtype.kind)
                items.append(item)
            token = (result.get("metadata") or {}).get("continue")
            if not token:
                return items

    async def apply(self, manifest: Mapping[str, Any], field_manager: str, *, force: bool = True,
                    dry_run: bool = False, subresource: str | None = None) -> dict:
        """Server-side apply: send the fields this manager wants, the API server merges and records ownership.

        An apply whose content equals what the object already holds is a no-op on the server (the
        resourceVersion does not change), so callers can apply on every reconcile and compare resourceVersions to
        learn whether anything changed."""
        rtype = self._type_of(manifest)
        meta = manifest.get("metadata") or {}
        name = meta.get("name")
        if not name:
            raise ValueError(f"{rtype.kind} manifest needs metadata.name")
        namespace = meta.get("namespace") if rtype.namespaced else None
        if rtype.namespaced and not namespace:
            raise ValueError(f"{rtype.kind} {name} manifest needs metadata.namespace")
        query = {"fieldManager": field_manager, "force": "true" if force else None,
                 "dryRun": "All" if dry_run else None}
        return await self.request("PATCH", rtype.path(namespace, name, subresource), query=query,
                                  body=dict(manifest), content_type=APPLY_PATCH)

    async def patch(self, rtype: ResourceType, name: str, namespace: str | None, patch: Any, *,
                    content_type: str = MERGE_PATCH, subresource: str | None = None,
                    field_manager: str | None = None) -> dict:
        return await self.request("PATCH", rtype.path(namespace, name, subresource), body=patch,
                                  content_type=content_type, query={"fieldManager": field_manager})

    async def patch_status(self, rtype: ResourceType, name: str, namespace: str | None, status: Mapping[str, Any],
                           *, field_manager: str | None = None, resource_version: str | None = None) -> dict:
        """JSON merge patch of the status subresource: only the keys given change, so writers of other status
        keys (the autoscaler's status.autoscaling) are left alone. A key set to None is removed.

        A list (status.conditions) is replaced whole by a merge patch, so whoever writes one must have read the
        latest: with `resource_version` the patch applies only to that version of the object, and fails with
        409 Conflict (`KubeApiError.conflict`) when someone wrote in between; re-read and try again."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": str(resource_version)}
        return await self.patch(rtype, name, namespace, body, content_type=MERGE_PATCH,
                                subresource="status", field_manager=field_manager)

    async def create(self, manifest: Mapping[str, Any], *, field_manager: str | None = None) -> dict:
        rtype = self._type_of(manifest)
        namespace = (manifest.get("metadata") or {}).get("namespace") if rtype.namespaced else None
        return await self.request("POST", rtype.path(namespace), body=dict(manifest),
                                  query={"fieldManager": field_manager})

    async def delete(self, rtype: ResourceType, name: str, namespace: str | None = None, *,
                     propagation: str = "Background", uid: str | None = None) -> bool:
        """Delete one object; True if it was deleted, False if it was already gone. `uid` makes the delete
        conditional on the object still being the one we looked at."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", rtype.path(namespace, name), body=body)
        except KubeApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    # -- scale --------------------------------------------------------------------------------------------------
    async def get_scale(self, rtype: ResourceType, name: str, namespace: str) -> dict:
        return await self.get(rtype, name, namespace, subresource="scale")

    async def set_replicas(self, rtype: ResourceType, name: str, namespace: str, replicas: int, *,
                           field_manager: str) -> dict:
        """Set spec.replicas through server-side apply under `field_manager` (force), so that manager owns it."""
        manifest = {"apiVersion": rtype.api_version, "kind": rtype.kind,
                    "metadata": {"name": name, "namespace": namespace}, "spec": {"replicas": int(replicas)}}
        return await self.apply(manifest, field_manager, force=True)

    # -- events -------------------------------------------------------------------------------------------------
    async def create_event(self, involved: Mapping[str, Any], *, reason: str, message: str, type: str = "Normal",
                           action: str | None = None, component: str = "tei-operator") -> dict | None:
        """Record a core/v1 Event about an object (what `kubectl describe` shows), or one more occurrence of it.

        The same event about the same object (reason, type, message, action, component: see kube_events.py) is
        one Event whose `count` and `lastTimestamp` go up, as Kubernetes' own recorder does, so a repeated warning
        shows as "(x5 over 10m)" instead of piling up objects. Requests: one for a first occurrence (create), one
        for a repeat this client wrote before (a patch with the resourceVersion it last saw), more only when
        another writer got there first (409: read, patch again) or the Event expired (404: create again).

        Returns the Event as written. Never raises for API failures: an event that cannot be written is logged,
        it must not fail the reconcile that caused it. A `type` other than Normal/Warning or an empty `reason`
        is a bug of the caller and raises ValueError."""
        key = event_key(involved, reason=reason, message=message, type=type, action=action, component=component)
        namespace, name = event_namespace(key), event_name(key)
        lock = self._event_locks.get((namespace, name))
        if lock is None:
            lock = self._event_locks[(namespace, name)] = asyncio.Lock()
        try:
            # One write at a time per Event in this process (the controller and the autoscaler share the client):
            # racing each other would only turn into 409s and retries. Other processes are handled by the retries.
            async with lock:
                event = await self._record_event(key, namespace, name)
        except KubeApiError as exc:
            self._recent_events.forget(namespace, name)
            level = logging.DEBUG if exc.namespace_terminating else logging.WARNING
            meta = involved.get("metadata") or {}
            logger.log(level, "Failed to record event %s on %s %s/%s: %s", reason, involved.get("kind"), namespace,
                       meta.get("name"), exc)
            return None
        self._recent_events.put(event)
        return event

    async def _record_event(self, key: EventKey, namespace: str, name: str) -> dict:
        """Create the Event or count one more occurrence on it, whichever the API server's state calls for.

        The state is the Event as last known (None: not known to exist). A create that finds it existing (409
        AlreadyExists: another writer, or this operator before a restart) and a count patched on a stale read (409
        Conflict: someone counted since) both read it again and retry; a patch of an Event that expired (404)
        creates it afresh."""
        now = _now_rfc3339()

        async def write(known: dict | None) -> dict:
            if known is not None:
                try:
                    return await self.patch(EVENT, name, namespace, repeat_patch(known, now=now))
                except KubeApiError as exc:
                    if not exc.not_found:  # expired by the API server's event TTL, or deleted: a fresh Event
                        raise
            body = new_event(key, now=now, reporting_instance=socket.gethostname())
            return await self.request("POST", EVENT.path(namespace), body=body)

        return await retry_on_conflict(write, self._recent_events.get(namespace, name),
                                       lambda: self.get_or_none(EVENT, name, namespace),
                                       attempts=EVENT_WRITE_ATTEMPTS, retry_when_gone=True,
                                       what=f"Event {namespace}/{name}")


def managed_field_paths(obj: Mapping[str, Any], manager: str, operation: str | None = "Apply") -> list[dict]:
    """The fieldsV1 trees that `manager` owns on `obj` (usually zero or one)."""
    out = []
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == manager and (operation is None or entry.get("operation") == operation):
            if entry.get("subresource"):
                continue
            out.append(entry.get("fieldsV1") or {})
    return out


def owns_field(obj: Mapping[str, Any], manager: str, *path: str, operation: str | None = "Apply") -> bool:
    """Whether `manager` owns the field at `path` (e.g. "spec", "replicas") according to managedFields."""
    for tree in managed_field_paths(obj, manager, operation):
        node: Any = tree
        for key in path:
            node = node.get(f"f:{key}") if isinstance(node, dict) else None
            if node is None:
                break
        else:
            return True
    return False
