"""The emulator's settings, from command-line flags or environment variables.

Flags that TEI's launcher has keep TEI's names and TEI's environment variables (`--max-batch-tokens` /
`MAX_BATCH_TOKENS`, `--port` / `PORT` ...), so the Deployment the operator renders for TEI runs the emulator
unchanged. TEI flags that mean nothing to an emulator (`--dtype`, `--hf-token`, `--otlp-endpoint` ...) are
accepted and ignored for the same reason. Flags TEI does not have use an `EMULATOR_` environment prefix.

One TEI variable is deliberately not read: `HOSTNAME`. Kubernetes sets it to the pod's name and shells to the
machine's, so honouring it would make the emulator listen on a non-loopback address nobody asked for.
The emulator listens on 127.0.0.1 unless `--host`/`--hostname`/`EMULATOR_HOST` says otherwise.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tei_operator.emulator.batching import Profile, ProfileError, load_profile

Kind = Literal["embedding", "reranker"]
KINDS: tuple[Kind, ...] = ("embedding", "reranker")
POOLINGS = ("cls", "mean", "splade", "last-token")
VERSION = "1.9.3-emulator"


class EmulatorConfigError(ValueError):
    """A flag or environment variable has a value the emulator cannot run with; the message names it."""


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything one emulator instance needs; validated on creation."""

    model_id: str = "BAAI/bge-m3"
    revision: str | None = None
    kind: Kind = "embedding"
    pooling: str = "cls"
    dtype: str = "float16"
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    tokens_per_second: float = 60_000.0
    batch_overhead_seconds: float = 0.002
    seconds_per_token_sq: float = 0.0
    load_seconds: float = 0.0
    download_seconds: float = 0.0
    cache_dir: str | None = None
    warm_cache: bool | None = None
    hub_offline: bool = False
    max_batch_tokens: int = 16_384
    max_batch_requests: int | None = None
    max_concurrent_requests: int = 512
    max_client_batch_size: int = 32
    max_input_length: int = 512
    auto_truncate: bool = True
    payload_limit: int = 2_000_000
    api_key: str | None = None
    dimensions: int = 1024
    shutdown_timeout: float | None = None
    json_output: bool = False
    profile: str | None = None

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "EmulatorConfig":
        """The emulator of `profile`'s model: its batch cost and TEI limits, then `overrides` (port=0, ...)."""
        values: dict[str, Any] = {**profile_values(profile), **overrides}
        return cls(**values)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.model_id:
            problems.append("--model-id: must not be empty")
        if self.kind not in KINDS:
            problems.append(f"--kind: must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.pooling not in POOLINGS:
            problems.append(f"--pooling: must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if not 0 <= self.port <= 65535:
            problems.append(f"--port: must be between 0 and 65535, got {self.port}")
        for flag, value in (
            ("--tokens-per-second", self.tokens_per_second),
            ("--max-batch-tokens", self.max_batch_tokens),
            ("--max-concurrent-requests", self.max_concurrent_requests),
            ("--max-client-batch-size", self.max_client_batch_size),
            ("--max-input-length", self.max_input_length),
            ("--payload-limit", self.payload_limit),
            ("--dimensions", self.dimensions),
        ):
            if value <= 0:
                problems.append(f"{flag}: must be greater than 0, got {value}")
        for flag, value in (("--batch-overhead-ms", self.batch_overhead_seconds), ("--load-seconds", self.load_seconds),
                            ("--download-seconds", self.download_seconds),
                            ("--seconds-per-token-sq", self.seconds_per_token_sq)):
            if value < 0:
                problems.append(f"{flag}: must be 0 or more, got {value}")
        if self.max_batch_requests is not None and self.max_batch_requests <= 0:
            problems.append(f"--max-batch-requests: must be greater than 0 when set, got {self.max_batch_requests}")
        if self.shutdown_timeout is not None and self.shutdown_timeout < 0:
            problems.append(f"--shutdown-timeout: must be 0 or more when set, got {self.shutdown_timeout}")
        if 0 < self.max_batch_tokens < self.max_input_length:
            # TEI refuses to start in this case too: a maximal input would never fit in a batch.
            problems.append(
                f"--max-batch-tokens: must be at least --max-input-length ({self.max_input_length}), "
                f"got {self.max_batch_tokens}"
            )
        if problems:
            raise EmulatorConfigError("; ".join(problems))

    def cache_is_warm(self) -> bool:
        """Whether the model's files are already local, so a start only loads them (no download).

        In this order: --warm-cache / EMULATOR_WARM_CACHE when set; a MODEL_ID that is an existing directory (TEI
        loads a local model without the Hub); HF_HUB_OFFLINE=1 (the pod was told the files are there, as the
        operator's managed cache does: spec.cache.managed); the revision's snapshot (or, without a revision, any
        snapshot) under the hub cache dir (HUGGINGFACE_HUB_CACHE)."""
        if self.warm_cache is not None:
            return self.warm_cache
        if self.model_id.startswith("/") and os.path.isdir(self.model_id):
            return True
        if self.hub_offline:
            return True
        if self.cache_dir:
            snapshots = os.path.join(self.cache_dir, "models--" + self.model_id.replace("/", "--"), "snapshots")
            if self.revision:
                return os.path.isdir(os.path.join(snapshots, self.revision))
            return os.path.isdir(snapshots) and bool(os.listdir(snapshots))
        return False

    def startup_seconds(self) -> float:
        """Modelled time from start to the port opening: download (on a cold cache) plus load."""
        return self.load_seconds + (0.0 if self.cache_is_warm() else self.download_seconds)

    @property
    def model_name(self) -> str:
        """The name reported as `model` in OpenAI-style responses."""
        return self.served_model_name or self.model_id

    def describe(self) -> str:
        """A one-line summary for the start-up log, without the API key (TEI logs it in clear; we do not)."""
        return (
            f"model_id={self.model_id} kind={self.kind} tokens_per_second={self.tokens_per_second:g} "
            f"batch_overhead_ms={self.batch_overhead_seconds * 1000:g} "
            f"seconds_per_token_sq={self.seconds_per_token_sq:g} load_seconds={self.load_seconds:g} "
            f"download_seconds={self.download_seconds:g} warm_cache={self.cache_is_warm()} "
            f"max_batch_tokens={self.max_batch_tokens} max_batch_requests={self.max_batch_requests} "
            f"max_concurrent_requests={self.max_concurrent_requests} "
            f"max_client_batch_size={self.max_client_batch_size} max_input_length={self.max_input_length} "
            f"auto_truncate={self.auto_truncate} dimensions={self.dimensions} "
            f"api_key={'<set>' if self.api_key else '<none>'}"
            + (f" profile={self.profile}" if self.profile else "")
        )


def profile_values(profile: Profile) -> dict[str, Any]:
    """The EmulatorConfig fields a profile sets (everything about the modelled GPU and TEI's limits)."""
    return {
        "model_id": profile.model,
        "kind": profile.kind,
        "tokens_per_second": 1.0 / profile.seconds_per_token,
        "batch_overhead_seconds": profile.overhead_s,
        "seconds_per_token_sq": profile.seconds_per_token_sq,
        "max_batch_tokens": profile.max_batch_tokens,
        "max_batch_requests": profile.max_batch_requests,
        "max_concurrent_requests": profile.max_concurrent_requests,
        "max_client_batch_size": profile.max_client_batch_size,
        "max_input_length": profile.max_input_length,
        "profile": profile.name,
    }


def parse_bool(text: str) -> bool:
    """`true/false`, `1/0`, `yes/no`, `on/off` (any case) as a bool."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _positive_or_none(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none") else int(text)


@dataclass(frozen=True)
class _Option:
    """One setting: its flags, the environment variable it also reads, how to convert text, and its field."""

    flags: tuple[str, ...]
    env: str | None
    convert: Callable[[str], Any]
    field: str
    help: str
    scale: float = 1.0  # multiply the converted value (ms -> s)


_OPTIONS: tuple[_Option, ...] = (
    _Option(("--model-id",), "MODEL_ID", str, "model_id", "model to pretend to serve (reported in /info)"),
    _Option(("--revision",), "REVISION", str, "revision", "model revision (reported in /info as model_sha)"),
    _Option(("--kind",), "EMULATOR_KIND", str, "kind",
            "embedding or reranker (default: reranker if the model id contains 'rerank', else embedding)"),
    _Option(("--pooling",), "POOLING", str, "pooling", "pooling reported in /info for an embedding model"),
    _Option(("--dtype",), "DTYPE", str, "dtype", "reported in /info"),
    _Option(("--served-model-name",), "SERVED_MODEL_NAME", str, "served_model_name", "model name in responses"),
    _Option(("--host", "--hostname"), "EMULATOR_HOST", str, "host", "address to listen on (default 127.0.0.1)"),
    _Option(("--port",), "PORT", int, "port", "port to listen on (0 picks a free one)"),
    _Option(("--tokens-per-second",), "EMULATOR_TOKENS_PER_SECOND", float, "tokens_per_second",
            "modelled GPU throughput (BGE-M3 on an A100: about 60000)"),
    _Option(("--batch-overhead-ms",), "EMULATOR_BATCH_OVERHEAD_MS", float, "batch_overhead_seconds",
            "fixed time per batch on top of tokens / tokens-per-second", scale=0.001),
    _Option(("--seconds-per-token-sq",), "EMULATOR_SECONDS_PER_TOKEN_SQ", float, "seconds_per_token_sq",
            "extra seconds per batch per squared input length (attention's cost; default 0)"),
    _Option(("--profile",), "EMULATOR_PROFILE", str, "profile",
            "a model/GPU profile (shipped name such as bge-m3-a100, or a YAML path): its batch cost and TEI limits "
            "become the defaults; other flags override them"),
    _Option(("--load-seconds",), "EMULATOR_LOAD_SECONDS", float, "load_seconds",
            "modelled model-loading time (from local files); the port is bound only after it"),
    _Option(("--download-seconds",), "EMULATOR_DOWNLOAD_SECONDS", float, "download_seconds",
            "modelled download time, added before the load on a cold cache (see --warm-cache)"),
    _Option(("--warm-cache",), "EMULATOR_WARM_CACHE", parse_bool, "warm_cache",
            "true: the model's files are local (no download); false: always download. Default: warm when MODEL_ID "
            "is a directory, HF_HUB_OFFLINE=1, or the revision's snapshot is in the hub cache dir"),
    _Option(("--huggingface-hub-cache",), "HUGGINGFACE_HUB_CACHE", str, "cache_dir",
            "hub cache directory looked in for the model's snapshot (a warm cache)"),
    _Option(("--hf-hub-offline",), "HF_HUB_OFFLINE", parse_bool, "hub_offline",
            "the model's files are local and the Hub is not contacted: a warm start"),
    _Option(("--max-batch-tokens",), "MAX_BATCH_TOKENS", int, "max_batch_tokens", "tokens per batch at most"),
    _Option(("--max-batch-requests",), "MAX_BATCH_REQUESTS", _positive_or_none, "max_batch_requests",
            "inputs per batch at most (default: no limit)"),
    _Option(("--max-concurrent-requests",), "MAX_CONCURRENT_REQUESTS", int, "max_concurrent_requests",
            "inputs in flight at most; one more gets 429 Overloaded"),
    _Option(("--max-client-batch-size",), "MAX_CLIENT_BATCH_SIZE", int, "max_client_batch_size",
            "inputs per request at most"),
    _Option(("--max-input-length",), "EMULATOR_MAX_INPUT_LENGTH", int, "max_input_length",
            "tokens per input at most (a real TEI reads it from the model's config)"),
    _Option(("--payload-limit",), "PAYLOAD_LIMIT", int, "payload_limit", "request body bytes at most"),
    _Option(("--api-key",), "API_KEY", str, "api_key", "require 'Authorization: Bearer KEY' (not on /health, /metrics)"),
    _Option(("--dimensions",), "EMULATOR_DIMENSIONS", int, "dimensions", "length of the fake embedding vectors"),
    _Option(("--shutdown-timeout",), "EMULATOR_SHUTDOWN_TIMEOUT", float, "shutdown_timeout",
            "seconds to wait for in-flight requests on SIGTERM (default: no limit, like TEI)"),
)

#: TEI launcher flags that are accepted (so TEI's arguments work) and ignored: name -> TEI environment variable.
_IGNORED_TEI_FLAGS: dict[str, str] = {
    "--default-prompt-name": "DEFAULT_PROMPT_NAME",
    "--default-prompt": "DEFAULT_PROMPT",
    "--dense-path": "DENSE_PATH",
    "--tokenization-workers": "TOKENIZATION_WORKERS",
    "--hf-token": "HF_TOKEN",
    "--hf-api-token": "HF_API_TOKEN",
    "--uds-path": "UDS_PATH",
    "--otlp-endpoint": "OTLP_ENDPOINT",
    "--otlp-service-name": "OTLP_SERVICE_NAME",
    "--prometheus-port": "PROMETHEUS_PORT",
    "--cors-allow-origin": "CORS_ALLOW_ORIGIN",
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tei_operator.emulator",
        description="An emulator of Hugging Face Text Embeddings Inference (TEI) for tests and demos: "
        "TEI's HTTP API and metrics, fake vectors, a modelled GPU. Not a model server.",
        epilog="Also accepted and ignored, so that TEI's arguments work unchanged: "
        + ", ".join(_IGNORED_TEI_FLAGS) + ". HOSTNAME is not read (in Kubernetes it is the pod's name).",
    )
    for option in _OPTIONS:
        env_note = f" [env {option.env}]" if option.env else ""
        parser.add_argument(*option.flags, dest=option.field, default=None, metavar="VALUE",
                            help=option.help + env_note)
    parser.add_argument("--auto-truncate", dest="auto_truncate", nargs="?", const="true", default=None,
                        metavar="BOOL", help="cut inputs longer than --max-input-length instead of refusing them "
                        "(default true, as in TEI 1.9) [env AUTO_TRUNCATE]")
    parser.add_argument("--no-auto-truncate", dest="auto_truncate", action="store_const", const="false")
    parser.add_argument("--json-output", dest="json_output", nargs="?", const="true", default=None,
                        metavar="BOOL", help="log JSON lines [env JSON_OUTPUT]")
    ignored = parser.add_argument_group("TEI flags accepted and ignored")
    for flag in _IGNORED_TEI_FLAGS:
        ignored.add_argument(flag, default=None, metavar="VALUE", help=argparse.SUPPRESS)
    return parser


def _convert(source: str, text: str, convert: Callable[[str], Any]) -> Any:
    try:
        return convert(text)
    except ValueError as exc:
        expected: dict[Callable[[str], Any], str] = {
            int: "an integer", float: "a number", parse_bool: "true or false", _positive_or_none: "an integer or none",
        }
        kind = expected.get(convert, "a valid value")
        raise EmulatorConfigError(f"{source}: expected {kind}, got {text!r}") from exc


def parse_config(argv: Sequence[str] | None, environ: Mapping[str, str]) -> EmulatorConfig:
    """Build the configuration: a flag wins over its environment variable, which wins over the default.

    Raises `EmulatorConfigError` naming the flag or variable at fault; `--help` exits through argparse.
    """
    parser = _build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    values: dict[str, Any] = {}
    for option in _OPTIONS:
        raw = getattr(args, option.field)
        source = option.flags[0]
        if raw is None and option.env and environ.get(option.env, "") != "":
            raw, source = environ[option.env], option.env
        if raw is not None:
            value = _convert(source, raw, option.convert)
            values[option.field] = value * option.scale if option.scale != 1.0 and value is not None else value
    for field, env in (("auto_truncate", "AUTO_TRUNCATE"), ("json_output", "JSON_OUTPUT")):
        raw, source = getattr(args, field), f"--{field.replace('_', '-')}"
        if raw is None and environ.get(env, "") != "":
            raw, source = environ[env], env
        if raw is not None:
            values[field] = _convert(source, raw, parse_bool)
    if values.get("profile"):
        source = "--profile" if args.profile is not None else "EMULATOR_PROFILE"
        try:
            profile = load_profile(values["profile"])
        except ProfileError as exc:
            raise EmulatorConfigError(f"{source}: {exc}") from None
        values = {**profile_values(profile), **{k: v for k, v in values.items() if k != "profile"},
                  "profile": profile.name}
    if "kind" not in values:
        values["kind"] = "reranker" if "rerank" in values.get("model_id", EmulatorConfig.model_id).lower() else "embedding"
    return EmulatorConfig(**values)
