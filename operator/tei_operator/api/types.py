"""Constrained scalar types shared by the spec models, each valid in pydantic and in the CRD schema alike.

Patterns use the common subset of Rust's regex (pydantic) and Go's RE2 (the API server), so both refuse the same
strings.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, PlainValidator

from .base import SchemaHint

# RFC 1123 subdomain: names of Secrets, PVCs, ServiceAccounts, PriorityClasses.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# RFC 1035 label: a Service's name, and so the name of an EmbeddingService/RerankerService.
DNS_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# Kubernetes resource.Quantity, as Kubernetes' own OpenAPI states it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
PERCENT_PATTERN = r"^[0-9]+%$"

_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_PERCENT_RE = re.compile(PERCENT_PATTERN)


def _quantity(value: Any) -> int | str:
    """Accept what the API server accepts for a quantity: an integer or a quantity string such as "16Gi"."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"must be an integer or a quantity string such as 500m or 16Gi (got {value!r})")
    if isinstance(value, str) and not _QUANTITY_RE.match(value):
        raise ValueError(f"must be a quantity such as 500m, 2, 16Gi or 20G (got {value!r})")
    return value


def _int_or_percent(value: Any) -> int | str:
    """Accept a non-negative integer or a percentage string, as a Deployment's rolling update does."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"must be a non-negative integer or a percentage such as 25% (got {value!r})")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"must be >= 0 (got {value})")
    if isinstance(value, str) and not _PERCENT_RE.match(value):
        raise ValueError(f"must be a non-negative integer or a percentage such as 25% (got {value!r})")
    return value


Quantity = Annotated[
    int | str,
    PlainValidator(_quantity),
    SchemaHint(**{"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]
IntOrPercent = Annotated[
    int | str,
    PlainValidator(_int_or_percent),
    SchemaHint(**{"x-kubernetes-int-or-string": True, "pattern": PERCENT_PATTERN, "minimum": 0}),
]

DnsSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
LabelValue = Annotated[str, Field(max_length=63)]
AnnotationValue = Annotated[str, Field(max_length=4096)]
FreeForm = dict[str, Any]
