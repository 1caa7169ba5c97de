"""The one retry loop for read-modify-write: redo the write on a fresh read when the API server answers 409.

A write computed from an object as read (a status merge patch replacing the conditions list, a JSON patch removing
hand edits, one more count on an Event) carries the resourceVersion it was computed from. If someone wrote in
between, the API server refuses it with 409 Conflict and changes nothing; the writer reads the object again and
computes the write anew from what is stored now. Every such loop in the operator goes through `retry_on_conflict`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .kube_errors import KubeApiError

logger = logging.getLogger(__name__)

CONFLICT_ATTEMPTS = 5  # writes in all (the first and four redone after a conflict) unless a caller says otherwise

S = TypeVar("S")
R = TypeVar("R")


async def retry_on_conflict(write: Callable[[S], Awaitable[R]], state: S, reread: Callable[[], Awaitable[S | None]],
                            *, attempts: int = CONFLICT_ATTEMPTS, gone: R = None, retry_when_gone: bool = False,
                            what: str = "object") -> R:
    """`write(state)`; on 409 Conflict `state = await reread()` and `write(state)` again, `attempts` writes in all.

    `state` is the object as first read (often from the watch cache, so the first attempt costs no GET). `write`
    computes the write from it and sends it; it may return early without writing (nothing to change). When
    `reread` finds the object gone (None), the result is `gone`, unless `retry_when_gone` (then `write(None)` runs:
    e.g. create what expired). Errors other than 409 are raised at once; the last 409 is raised when every
    attempt conflicted. `what` names the object in the debug log."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return await write(state)
        except KubeApiError as exc:
            if not exc.conflict or attempt == attempts:
                raise
        logger.debug("%s changed since it was read (409 Conflict); reading it again, attempt %d of %d",
                     what, attempt + 1, attempts)
        fresh = await reread()
        if fresh is None and not retry_when_gone:
            return gone
        state = fresh  # type: ignore[assignment]
    raise AssertionError("unreachable: the last attempt returns or raises")
