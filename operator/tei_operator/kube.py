"""The one small Kubernetes client of the operator.

Everything that talks to the API server goes through `KubeClient`: the controller and the autoscaler share it, so
authentication, server-side apply and error decoding live in one place. It wraps the synchronous `kubernetes`
client at its lowest level (a raw REST call with the loaded credentials) rather than its generated per-kind
methods, because the operator works on plain dicts (rendered manifests, kopf bodies) and needs content types the
generated methods do not offer (`application/apply-patch+yaml`, `application/merge-patch+json`). Every public
method is a coroutine that runs the blocking call in a worker thread (`asyncio.to_thread`), so the kopf event loop
is never blocked by a slow API server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import json
import logging
import os
import socket
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from .kube_events import EventKey, RecentEvents, event_key, event_name, event_namespace, new_event, repeat_patch
from .metrics import METRICS, WRITE_METHODS

logger = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"  # JSON is valid YAML: the body is sent as JSON
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
DEFAULT_TIMEOUT_SECONDS = 30.0
EVENT_WRITE_ATTEMPTS = 5  # create/patch rounds for one event before giving up (each lost round means another wrote)


class KubeApiError(Exception):
    """An API request failed. `status` is the HTTP status (0 when the server could not be reached).

    `reason` is the Kubernetes Status reason (`NotFound`, `Conflict`, `Invalid`, ...), `message` the server's own
    words (they name the field for validation errors), `retry_after` the server's Retry-After hint in seconds.
    """

    def __init__(
        self, status: int, reason: str, message: str, *, retry_after: float | None = None, request: str = "",
        causes: tuple[str, ...] = (),
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.request = request
        self.causes = causes  # the Status' details.causes[].reason, e.g. NamespaceTerminating
        super().__init__(f"{request}: {status} {reason}: {message}" if request else f"{status} {reason}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def namespace_terminating(self) -> bool:
        """Refused because the namespace is being deleted: nothing to create there any more."""
        return self.status == 403 and ("NamespaceTerminating" in self.causes or "being terminated" in self.message)


class NotLeaderError(KubeApiError):
    """A write refused before it was sent (status 0, reason NotLeader): this replica does not hold the leader Lease
    (see `KubeClient.write_guard`)."""

    def __init__(self, request: str) -> None:
        super().__init__(0, "NotLeader", "not sent: this operator replica does not hold the leader Lease",
                         request=request)


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


def _error_from_response(status: int, reason: str, body: bytes | str | None, headers: Mapping[str, str] | None,
                         request: str) -> KubeApiError:
    """Decode a failed response: prefer the Kubernetes Status object's reason and message, which name the field."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    status_reason, message = reason or "", text.strip()
    causes: tuple[str, ...] = ()
    try:
        decoded = json.loads(text) if text else {}
    except ValueError:
        decoded = {}
    if isinstance(decoded, dict) and decoded.get("kind") == "Status":
        status_reason = decoded.get("reason") or status_reason
        message = decoded.get("message") or message
        causes = tuple(str(c.get("reason")) for c in (decoded.get("details") or {}).get("causes") or []
                       if isinstance(c, dict) and c.get("reason"))
    retry_after: float | None = None
    if headers:
        raw = {k.lower(): v for k, v in headers.items()}.get("retry-after")
        if raw:
            try:
                retry_after = float(raw)
            except ValueError:
                retry_after = None
    return KubeApiError(status, status_reason or "Unknown", message, retry_after=retry_after, request=request,
                        causes=causes)


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeClient:
    """A small async Kubernetes client over plain dicts.

    Build it with `KubeClient.from_environment()` (kubeconfig from $KUBECONFIG / ~/.kube/config, or the in-cluster
    service account), or pass a configured `kubernetes.client.ApiClient`. Kinds are found by (apiVersion, kind) in
    a small table of built-ins plus whatever `register()` adds (the operator registers its custom kinds).

    `write_guard`, when set, is asked before every write (POST, PUT, PATCH, DELETE): False refuses the write with
    `NotLeaderError`, without sending it (the leader election fences a replica that lost the Lease this way).
    `executor` runs the blocking calls instead of asyncio's default executor (the Lease client has its own thread,
    so a renewal never waits behind a burst of reconciles). Every call is counted in `metrics.METRICS`.
    """

    def __init__(self, api_client: Any, *, timeout: float = DEFAULT_TIMEOUT_SECONDS, executor: Any = None) -> None:
        self._api = api_client
        self._timeout = timeout
        self._executor = executor
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
                         executor: Any = None) -> "KubeClient":
        """Load credentials: an explicit kubeconfig, else $KUBECONFIG or ~/.kube/config, else the in-cluster
        service account. Reads files, so call it at start-up, never at import."""
        from kubernetes import client, config

        configuration = client.Configuration()
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path or os.path.exists(os.path.expanduser("~/.kube/config")):
            config.load_kube_config(config_file=path, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)
        return cls(client.ApiClient(configuration), timeout=timeout, executor=executor)

    def close(self) -> None:
        self._api.close()

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
    def _request_sync(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                      body: Any = None, content_type: str | None = None) -> Any:
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        url_path = path + ("?" + urlencode(params) if params else "")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        described = f"{method} {url_path}"
        request = self._api.param_serialize(
            method=method, resource_path=url_path, header_params=headers, body=body, auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*request, _request_timeout=self._timeout)
            data = response.read()
        except Exception as exc:  # urllib3 connection errors and timeouts
            if hasattr(exc, "status") and getattr(exc, "status", None):
                METRICS.api_request(method, path, int(exc.status))
                raise _error_from_response(exc.status, getattr(exc, "reason", ""), getattr(exc, "body", None),
                                           getattr(exc, "headers", None), described) from exc
            METRICS.api_request(method, path, 0)
            raise KubeApiError(0, "Unreachable", f"{type(exc).__name__}: {exc}", request=described) from exc
        METRICS.api_request(method, path, response.status)
        if not 200 <= response.status <= 299:
            raise _error_from_response(response.status, response.reason, data, response.headers, described)
        if not data:
            return None
        return json.loads(data)

    async def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
                      content_type: str | None = None) -> Any:
        """One API call in a worker thread; returns the decoded JSON body, raises `KubeApiError` (or
        `NotLeaderError` for a write the `write_guard` refuses)."""
        if self.write_guard is not None and method.upper() in WRITE_METHODS and not self.write_guard():
            raise NotLeaderError(f"{method} {path}")
        call = functools.partial(self._request_sync, method, path, query=query, body=body, content_type=content_type)
        if self._executor is None:
            return await asyncio.to_thread(call)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

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
        """Create the Event or count one more occurrence on it, whichever the API server's state calls for."""
        now = _now_rfc3339()
        known = self._recent_events.get(namespace, name)
        for _ in range(EVENT_WRITE_ATTEMPTS):
            if known is None:
                body = new_event(key, now=now, reporting_instance=socket.gethostname())
                try:
                    return await self.request("POST", EVENT.path(namespace), body=body)
                except KubeApiError as exc:
                    if not exc.conflict:
                        raise
                # 409 AlreadyExists: an earlier occurrence (another writer, or this operator before a restart).
                known = await self.get_or_none(EVENT, name, namespace)
                if known is None:  # expired or deleted in between: create it again
                    continue
            try:
                return await self.patch(EVENT, name, namespace, repeat_patch(known, now=now))
            except KubeApiError as exc:
                if exc.not_found:  # expired by the API server's event TTL, or deleted: a fresh Event
                    known = None
                    continue
                if not exc.conflict:
                    raise
            # 409 Conflict: someone counted an occurrence since `known` was read; count on top of theirs.
            known = await self.get_or_none(EVENT, name, namespace)
        raise KubeApiError(409, "Conflict", f"Event {namespace}/{name} kept changing: gave up after "
                                            f"{EVENT_WRITE_ATTEMPTS} attempts", request=f"record Event {name}")


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
