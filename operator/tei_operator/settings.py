"""Operator settings, read from TEI_OPERATOR_* environment variables (the Helm chart sets them).

Defaults suit an operator running in-cluster with the built-in scraper; nothing is read at import time:
call `load_settings()`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "TEI_OPERATOR_"
#: On-demand prices per GPU-hour quoted by practitioners (/work/shared/TEI.md); the chart's values repeat them.
DEFAULT_GPU_PRICES = {"a100": 1.04, "h100": 2.01, "rtx4090": 0.79}
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


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
        "every service. Each fast tick reads the services, their Deployments and pods from the operator's watch-fed "
        "cache (no API request) and scrapes the Ready pods of services with the fast path on.",
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
        None, description="Base URL of the Prometheus HTTP API, for example http://prometheus.monitoring:9090. Read "
        "by metricsSource prometheus, and by spec.autoscaling.scaleToZero's activation queries whatever the source.",
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
        description="Address the health endpoints (/healthz, /readyz) and the metrics endpoint (/metrics) bind to: "
        "loopback by default; 0.0.0.0 in a pod whose kubelet probes it and whose metrics Prometheus scrapes.",
    )
    health_port: int = Field(
        8080, ge=1, le=65535,
        description="Port of the operator's liveness (/healthz) and readiness (/readyz) endpoints. Both answer on "
        "the standby replica too: ready means it reaches the API server and can take over.",
    )
    metrics_port: int = Field(
        8081, ge=0, le=65535,
        description="Port of the operator's own Prometheus metrics (/metrics, docs/monitoring.md); 0 turns them "
        "off. A port that cannot be bound stops the operator at start.",
    )
    leader_election: bool = Field(
        True,
        description="Reconcile and autoscale only while holding the leader Lease, so several replicas can run and "
        "exactly one writes (the others stand by and take over when it stops renewing). false: act at once, for a "
        "single replica only.",
    )
    leader_election_namespace: str = Field(
        "", pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
        description="Namespace of the leader Lease; empty: the pod's own namespace (from its service account), or "
        "default outside a cluster. The Helm chart sets the release namespace.",
    )
    leader_election_lease_name: str = Field(
        "tei-operator", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253,
        description="Name of the coordination.k8s.io Lease the replicas elect their leader on. Replicas that share "
        "it share one leader; the Helm chart uses the release's full name.",
    )
    leader_election_lease_duration_seconds: float = Field(
        8, gt=0, le=300,
        description="How long a standby waits after the leader's last renewal it saw before it takes the Lease. "
        "After the leader dies without releasing it (SIGKILL, node lost), a standby leads within this plus two "
        "retry periods.",
    )
    leader_election_renew_deadline_seconds: float = Field(
        6, gt=0, le=300,
        description="The leader stops writing (and stands by) when it could not renew the Lease for this long; "
        "shorter than the lease duration, so it has stopped before a standby may take over.",
    )
    leader_election_retry_period_seconds: float = Field(
        1, gt=0, le=60,
        description="How often the leader renews the Lease and a standby reads it.",
    )
    operator_namespace: str | None = Field(
        None,
        description="Namespace the operator runs in: a service's NetworkPolicy (spec.networkPolicy) admits the "
        "operator's metrics scraper from there. Unset: read from the pod's ServiceAccount mount in a cluster; "
        "outside one, the scraper is admitted from any namespace by its pod labels alone.",
    )
    operator_pod_labels: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "tei-operator"},
        description="Labels of the operator's pods, as key=value pairs separated by commas in the environment: a "
        "service's NetworkPolicy admits the metrics scraper by them.",
    )
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

    gpu_prices: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_GPU_PRICES),
        description="Price of one GPU-hour in dollars per spec.gpu.type, for status.cost (the fleet's $/hour and $ "
        "per 1M tokens); `default` prices services whose gpu.type is unset. In the environment: "
        "a100=1.04,h100=2.01 (replaces the defaults). A GPU type without a price gets no status.cost.",
    )
    cost_sample_seconds: float = Field(
        60, ge=5, le=3600,
        description="How often the controller reads each Ready pod's token counter (te_request_input_length_sum) "
        "for the token rate in status.cost, when the service's GPU type has a price.",
    )

    cache_download_image: str = Field(
        "python:3.12-slim", min_length=1,
        description="Image of the managed model cache's download Job (spec.cache.managed). It runs `hf download`: "
        "an image with the huggingface_hub CLI (`hf`) uses it as is; any other image with Python and pip (the "
        "default) installs huggingface_hub into /tmp first. Pin a digest or a mirror in an air-gapped cluster.",
    )
    cache_job_backoff_limit: int = Field(
        3, ge=0, le=20,
        description="Retries of a failed model download (the download Job's backoffLimit) before status.cache says "
        "Failed.",
    )
    cache_job_deadline_seconds: int = Field(
        7200, ge=60, le=86400,
        description="Longest a model download may take (the download Job's activeDeadlineSeconds).",
    )
    api_connections: int = Field(
        32, ge=1, le=1024,
        description="Connections to the API server the operator keeps open at most (one pool shared by the "
        "controller and the autoscaler); a request beyond that waits for a free connection.",
    )

    @field_validator("gpu_prices", mode="before")
    @classmethod
    def _prices(cls, value: object) -> object:
        """Accept "a100=1.04, h100=2.01" from the environment as well as a mapping; every key a GPU type."""
        from .api.gpu import GPU_TYPES

        if isinstance(value, str):
            parsed: dict[str, object] = {}
            for part in (p.strip() for p in value.split(",")):
                if not part:
                    continue
                name, sep, price = part.partition("=")
                if not sep:
                    raise ValueError(f"{part!r}: expected GPU_TYPE=DOLLARS_PER_HOUR, e.g. a100=1.04")
                parsed[name.strip()] = price.strip()
            value = parsed
        if isinstance(value, dict):
            for name, price in value.items():
                if name != "default" and name not in GPU_TYPES:
                    raise ValueError(f"{name!r} is not a GPU type: one of {', '.join(GPU_TYPES)} or default")
                try:
                    number = float(price)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    raise ValueError(f"{name}: price {price!r} is not a number of dollars per hour") from None
                if not 0 <= number <= 1000:
                    raise ValueError(f"{name}: price {number} must be between 0 and 1000 dollars per hour")
        return value

    @model_validator(mode="after")
    def _lease_timing(self) -> "Settings":
        """The leader must give up before a standby may take over, and renew more than once per deadline."""
        lease, renew = self.leader_election_lease_duration_seconds, self.leader_election_renew_deadline_seconds
        retry = self.leader_election_retry_period_seconds
        if not renew < lease:
            raise ValueError(f"{env_var('leader_election_renew_deadline_seconds')} ({renew:g}) must be shorter than "
                             f"{env_var('leader_election_lease_duration_seconds')} ({lease:g}): the leader must stop "
                             "writing before a standby may take the Lease")
        if not 1.2 * retry < renew:
            raise ValueError(f"{env_var('leader_election_retry_period_seconds')} ({retry:g}) must be under "
                             f"{env_var('leader_election_renew_deadline_seconds')} / 1.2 ({renew / 1.2:g}): the "
                             "leader needs more than one try to renew before its deadline")
        if self.metrics_port and self.metrics_port == self.health_port:
            raise ValueError(f"{env_var('metrics_port')} and {env_var('health_port')} are both {self.health_port}: "
                             "give the metrics their own port (or 0 to turn them off)")
        return self

    @field_validator("namespaces", "extra_field_managers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        """Accept "a,b , c" from the environment as well as a list."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("operator_pod_labels", mode="before")
    @classmethod
    def _labels(cls, value: object) -> object:
        """Accept "a=b,c=d" from the environment as well as a mapping."""
        if isinstance(value, str):
            pairs = [part.strip() for part in value.split(",") if part.strip()]
            if any("=" not in pair for pair in pairs):
                raise ValueError(f"must be key=value pairs separated by commas (got {value!r})")
            return dict(pair.split("=", 1) for pair in pairs)
        return value

    @field_validator("operator_namespace", mode="after")
    @classmethod
    def _own_namespace(cls, value: str | None) -> str | None:
        """In a pod, the namespace is in the ServiceAccount mount (when the token is mounted)."""
        if value:
            return value
        try:
            with open(SERVICE_ACCOUNT_NAMESPACE_FILE, encoding="utf-8") as handle:
                return handle.read().strip() or None
        except OSError:
            return None

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
            if not err["loc"]:  # a rule across settings: its message names the variables
                lines.append(str(err["msg"]).removeprefix("Value error, "))
                continue
            field = str(err["loc"][0])
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
        elif isinstance(default, dict):
            shown = ",".join(f"{k}={v}" for k, v in default.items()) or "(empty)"
        elif default is None:
            shown = "(unset)"
        else:
            shown = str(default)
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | `{shown}` | {description} |")
    return "\n".join(lines) + "\n"
