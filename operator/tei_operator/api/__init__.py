"""The API of tei-operator: pydantic models of EmbeddingService and RerankerService, the single source of truth of
the CRDs (see `crd.generate_crds`)."""

from .autoscaling import AutoscalingSpec, AutoscalingStatus
from .errors import InvalidSpecError
from .kinds import API_VERSION, GROUP, KINDS, VERSION, KindInfo
from .resource import ServiceResource, parse_spec
from .spec import EmbeddingServiceSpec, RerankerServiceSpec, ServiceSpec
from .status import CONDITION_TYPES, Condition, ServiceStatus

__all__ = [
    "API_VERSION", "CONDITION_TYPES", "GROUP", "KINDS", "VERSION", "AutoscalingSpec", "AutoscalingStatus",
    "Condition", "EmbeddingServiceSpec", "InvalidSpecError", "KindInfo", "RerankerServiceSpec", "ServiceResource",
    "ServiceSpec", "ServiceStatus", "parse_spec",
]
