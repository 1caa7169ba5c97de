"""One process that answers for every simulated pod: `python -m bench.scale.fakepods --port 80`.

kwok gives pods addresses from the cluster's pod range, which is local on `lo` inside the benchmark's private network
namespace (tests/cluster/netns.py), so a single socket bound to 0.0.0.0:PORT receives what anyone sends to any pod
IP on that port. This server answers like an idle TEI there: `/health` 200, `/info` (one model for every pod), and
`/metrics` with TEI's series at rest. A thousand pods then cost one process instead of a thousand emulators.

`GET /_bench/counts` returns the requests served by client and path (`prometheus /metrics`: Prometheus's scrapes, told
by its User-Agent; `other /info`: everyone else, here the operator) and the pod addresses seen, as JSON.
"""

from __future__ import annotations

import argparse
import collections
import sys

from aiohttp import web

MODEL_ID = "BAAI/bge-small-en-v1.5"
MODEL_SHA = "5c38ec7c405ec4b44b94cc5a9bb96e735b38267a"

# TEI's series at rest: nothing queued, no batch run, no request served (counters without `_total`, as TEI).
IDLE_METRICS = "\n".join([
    "# TYPE te_queue_size gauge", "te_queue_size 0",
    "# TYPE te_batch_current_size gauge", "te_batch_current_size 0",
    "# TYPE te_batch_current_max_tokens gauge", "te_batch_current_max_tokens 0",
    "# TYPE te_request_count counter", 'te_request_count{method="batch"} 0',
    "# TYPE te_request_success counter", 'te_request_success{method="batch"} 0',
    "# TYPE te_request_input_length histogram",
    'te_request_input_length_bucket{le="+Inf"} 0', "te_request_input_length_sum 0", "te_request_input_length_count 0",
    "# TYPE te_batch_next_tokens histogram",
    'te_batch_next_tokens_bucket{le="0"} 0', 'te_batch_next_tokens_bucket{le="+Inf"} 0',
    "te_batch_next_tokens_sum 0", "te_batch_next_tokens_count 0",
    "# TYPE te_request_inference_duration histogram",
    'te_request_inference_duration_bucket{le="+Inf"} 0', "te_request_inference_duration_sum 0",
    "te_request_inference_duration_count 0",
    "",
])


def info() -> dict:
    return {"model_id": MODEL_ID, "model_sha": MODEL_SHA, "model_dtype": "float16",
            "model_type": {"embedding": {"pooling": "cls"}}, "max_concurrent_requests": 512,
            "max_input_length": 512, "max_batch_tokens": 16384, "max_batch_requests": None,
            "max_client_batch_size": 32, "auto_truncate": False, "tokenization_workers": 1, "version": "1.9.3",
            "sha": None, "docker_label": "scale-bench", "served_model_name": MODEL_ID}


def make_app() -> web.Application:
    counts: collections.Counter[str] = collections.Counter()
    seen: set[str] = set()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/_bench/counts":
            return web.json_response({"requests": dict(counts), "pods": len(seen)})
        client = "prometheus" if request.headers.get("User-Agent", "").startswith("Prometheus") else "other"
        counts[f"{client} {path}"] += 1
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if sockname:
            seen.add(sockname[0])
        if path == "/metrics":
            return web.Response(text=IDLE_METRICS, content_type="text/plain", charset="utf-8")
        if path == "/info":
            return web.json_response(info())
        if path in ("/health", "/", "/ping"):
            return web.Response(status=200)
        return web.json_response({"error": f"{path} is not served by the scale benchmark's pods"}, status=404)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.fakepods", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=80, help="the pods' TEI port (default 80)")
    args = parser.parse_args(argv)
    web.run_app(make_app(), host="0.0.0.0", port=args.port, print=None, access_log=None, reuse_address=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
