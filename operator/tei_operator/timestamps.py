"""Kubernetes timestamps: RFC 3339 in UTC to the second, as the API server writes them."""

from __future__ import annotations

import datetime


def rfc3339(epoch: float) -> str:
    """`epoch` (seconds) as the API server writes a time, e.g. 2026-12-01T02:56:26Z."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
