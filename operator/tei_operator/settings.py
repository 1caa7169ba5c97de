"""Operator settings, read from TEI_OPERATOR_* environment variables (the Helm chart sets them).

Defaults suit an operator running in-cluster with the built-in scraper; nothing is read at import time:
call `load_settings()`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "TEI_OPERATOR_"


class SettingsError(ValueError):
    """An operator setting is invalid; the message names its environment variable."""


class Settings(BaseSettings):
    """Everything the operator is configured with."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch, comma-separated in the environment. Empty: all namespaces.",
    )
    tei_version: str = Field(
        "1.9.3", pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]*$",
        description="TEI version of services that do not set engine.version. A full patch version (not 1.9) so the "
        "image is reproducible: a floating tag moves under running pods, and nodes may then run different builds "
        "of one service. 1.9.3 was TEI's newest release when this operator version was made.",
    )
    image_repository: str = Field(
        "ghcr.io/huggingface/text-embeddings-inference", min_length=1,
        description="Repository of the TEI images; the tag is the architecture prefix plus the version.",
    )
    log_format: Literal["plain", "json"] = Field("plain", description="Format of the operator's own logs.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Level of the operator's logs.")
    autoscaler_tick_seconds: float = Field(15, gt=0, le=3600, description="Seconds between autoscaler ticks.")
    autoscaler_fast_tick_seconds: float = Field(
        2, ge=0, le=60,
        description="Seconds between ticks of the fast scale-up path, which reads the Ready pods' /metrics directly "
        "(whatever the metrics source) and only ever scales up (spec.autoscaling.fastScaleUp). 0 turns it off for "
        "every service. Each fast tick LISTs the services, their Deployments and pods (label-selected), and scrapes "
        "the Ready pods of services with the fast path on.",
    )
    autoscaler_fast_window_seconds: float = Field(
        10, gt=0, le=120,
        description="Window of the fast path's rates and averaged queue, in seconds (Knative's panic window is 6 s); "
        "scale-down keeps the main tick's longer window.",
    )
    metrics_source: Literal["scrape", "prometheus"] = Field(
        "scrape",
        description="Where the autoscaler reads TEI metrics for services whose metricsSource is default: scrape "
        "(each pod's /metrics, no Prometheus needed) or prometheus (prometheusUrl).",
    )
    prometheus_url: str | None = Field(
        None, description="Base URL of the Prometheus HTTP API, for example http://prometheus.monitoring:9090.",
    )
    prometheus_namespace_label: str = Field("namespace", description="Prometheus label holding the pod's namespace.")
    prometheus_pod_label: str = Field("pod", description="Prometheus label holding the pod's name.")
    prometheus_query_timeout_seconds: float = Field(5, gt=0, le=300, description="Timeout of one Prometheus query.")
    scrape_via: Literal["auto", "proxy", "podip"] = Field(
        "auto",
        description="How the scraper reaches pods: podip (direct, in-cluster), proxy (through the API server's pod "
        "proxy, from outside the cluster), or auto (pod IP in-cluster, proxy otherwise).",
    )
    scrape_timeout_seconds: float = Field(3, gt=0, le=300, description="Timeout of one pod's /metrics scrape.")
    max_pending_replicas: int = Field(
        0, ge=0, le=1000,
        description="Extra pending pods allowed above the free GPU capacity, so a cluster autoscaler sees demand and "
        "adds nodes. 0: never ask for GPUs the cluster cannot schedule now.",
    )
    metrics_stale_seconds: float = Field(
        60, gt=0, le=3600,
        description="A pod's metrics older than this count as missing (never as zero load), for every service; a "
        "service's spec.autoscaling.metricsMaxAgeSeconds applies too, and the smaller of the two is the limit. Also "
        "how long a pod that just turned Ready may go unread before it counts as missing.",
    )
    resync_seconds: float = Field(60, gt=0, le=86400, description="Period of the reconcile timer of each service.")
    health_host: str = Field(
        "127.0.0.1", min_length=1,
        description="Address the liveness endpoint (/healthz) binds to: loopback by default; 0.0.0.0 in a pod whose "
        "kubelet probes it.",
    )
    health_port: int = Field(8080, ge=1, le=65535, description="Port of the operator's liveness endpoint.")
    field_manager: str = Field("tei-operator", min_length=1, description="Field manager of the controller's applies.")
    autoscaler_field_manager: str = Field(
        "tei-operator-autoscaler", min_length=1,
        description="Field manager of the autoscaler's writes of a Deployment's replicas.",
    )
    extra_field_managers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Field managers whose additions to a TEI Deployment's pod template the operator leaves alone "
        "(it removes everything else it did not set), comma-separated in the environment: a name matches exactly, "
        "a name ending in * is a prefix (istio-*). For tools that legitimately edit the template, such as a config "
        "reloader bumping a pod annotation. The DriftReverted event names the manager of each removed field. "
        "Fields the operator sets itself are still put back.",
    )

    @field_validator("namespaces", "extra_field_managers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        """Accept "a,b , c" from the environment as well as a list."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("extra_field_managers")
    @classmethod
    def _manager_names(cls, value: list[str]) -> list[str]:
        """Field manager names are at most 128 printable characters (the API server's limit); `*` only at the end,
        and not alone: trusting every manager would switch off the removal of hand edits without saying so."""
        for name in value:
            pattern = name[:-1] if name.endswith("*") else name
            if name == "*":
                raise ValueError("'*' would trust every field manager; name the managers (or prefixes like "
                                 "istio-*) to trust")
            if not pattern or len(name) > 128 or "*" in pattern or "," in name or any(
                    not c.isprintable() or c.isspace() for c in name):
                raise ValueError(f"{name!r} is not a field manager name or prefix: 1 to 128 printable characters "
                                 "without spaces or commas, * allowed only at the end")
        return value


def env_var(field: str) -> str:
    """The environment variable of a Settings field."""
    return ENV_PREFIX + field.upper()


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and `overrides`), validated; SettingsError names the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            field = str(err["loc"][0]) if err["loc"] else "?"
            lines.append(f"{env_var(field)}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid operator settings: " + "; ".join(lines)) from None


def settings_reference_markdown() -> str:
    """docs/settings.md: every setting with its environment variable, default and description (from `Settings`)."""
    lines = [
        "# Operator settings",
        "",
        "Generated from `operator/tei_operator/settings.py` by `tei-operator docs --settings` (`make crds` rewrites",
        "this file; a test fails when it drifts). The operator reads them from the environment at start; the Helm",
        "chart sets them from its values (`operator.*`, `operator.extraEnv` for the rest). An invalid value stops the",
        "operator at start with a message naming the variable.",
        "",
        "| variable | default | description |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = field.default_factory()
        else:
            default = field.default
        if isinstance(default, (list, tuple)):
            shown = ",".join(map(str, default)) or "(empty)"
        elif default is None:
            shown = "(unset)"
        else:
            shown = str(default)
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | `{shown}` | {description} |")
    return "\n".join(lines) + "\n"
