"""API error mapping, in one place: which failures are worth retrying, and how soon.

Every reconcile runs through the one work queue (queue.py), whatever started it; the queue retries a failure after
the delay `classify()` gives (doubled per failure in a row) and gives up on a permanent one, which the reconciler
reports in the service's conditions and Events (reconcile.py).
"""

from __future__ import annotations

import dataclasses

from ..kube import KubeApiError

CONFLICT_DELAY = 1.0        # someone wrote the object between our read and our write: retry soon
THROTTLED_DELAY = 5.0       # 429 without a Retry-After hint
SERVER_ERROR_DELAY = 10.0   # 5xx, timeouts, API server unreachable
NOT_FOUND_DELAY = 5.0       # e.g. the namespace is being created, or the CRD is not established yet
FORBIDDEN_DELAY = 60.0      # RBAC can be fixed without touching the resource: retry, but slowly
UNEXPECTED_DELAY = 30.0


@dataclasses.dataclass(frozen=True)
class ErrorClass:
    """How to treat a failure: `delay` seconds before retrying, or `permanent` (retrying cannot help)."""

    permanent: bool
    delay: float
    message: str


def classify(exc: BaseException) -> ErrorClass:
    """Sort an exception into retry-soon, retry-later or give-up.

    400 (bad request) and 422 (invalid object) are permanent: the same request fails the same way until the spec
    changes, which starts a new reconcile anyway. 409, 429, 5xx and connection failures are temporary."""
    if isinstance(exc, KubeApiError):
        status = exc.status
        text = f"{exc.reason}: {exc.message}"
        if status in (400, 422):
            return ErrorClass(True, 0.0, f"The API server refused the request ({status} {text})")
        if status == 409:
            return ErrorClass(False, CONFLICT_DELAY, f"Conflicting write, will retry ({text})")
        if status == 429:
            delay = exc.retry_after if exc.retry_after and exc.retry_after > 0 else THROTTLED_DELAY
            return ErrorClass(False, float(delay), f"The API server throttled the request ({text})")
        if status == 0 or status >= 500:
            return ErrorClass(False, SERVER_ERROR_DELAY, f"The API server failed or is unreachable ({text})")
        if status == 404:
            return ErrorClass(False, NOT_FOUND_DELAY, f"An object was not found ({text})")
        if status in (401, 403):
            return ErrorClass(False, FORBIDDEN_DELAY,
                              f"The operator is not allowed to do this; check its RBAC ({status} {text})")
        return ErrorClass(False, UNEXPECTED_DELAY, f"Unexpected API response ({status} {text})")
    if isinstance(exc, (TimeoutError, ConnectionError, OSError)):
        return ErrorClass(False, SERVER_ERROR_DELAY, f"{type(exc).__name__}: {exc}")
    return ErrorClass(False, UNEXPECTED_DELAY, f"{type(exc).__name__}: {exc}")
