"""The errors `KubeClient` raises, and how a failed response becomes one.

A module of its own so that helpers built on the client (kube_retry.py) can catch them without importing the
client itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


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


def error_from_response(status: int, reason: str, body: bytes | str | None, headers: Mapping[str, str] | None,
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
