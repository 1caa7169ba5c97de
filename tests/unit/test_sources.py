"""Metric sources against real things: the TEI emulator over HTTP, and a real Prometheus (/usr/bin/prometheus)
scraping it. Pure parts (rates with counter resets, staleness, URL building) with plain numbers.

TEI facts relied on (/work/shared/TEI.md): counters have no `_total` suffix; a series exists only after its first
observation; te_batch_next_tokens records zero-size batches (le="1" bucket); te_request_count counts requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tei_operator.autoscaling.sources import PodMetrics, PodTarget, ServiceTarget, SourceResult, aggregate
from tei_operator.autoscaling.sources.prometheus import (QUERY_NAMES, PrometheusSource, build_queries, parse_vector,
                                                         queue_series_lost)
from tei_operator.autoscaling.sources.scrape import (ApiProxyFetcher, KeepAliveFetcher, PodHistory, RawSample, ScrapeError,
                                                     ScrapeSource, check_content_type, counter_increase,
                                                     parse_tei_metrics, pod_ip_url, proxy_path, resolve_scrape_via)
from tei_operator.kube import KubeClient
from tei_operator.emulator.config import EmulatorConfig
from tei_operator.emulator.server import EmulatorServer

pytestmark = pytest.mark.timeout(60)

PROMETHEUS = "/usr/bin/prometheus"
ROOT = Path(__file__).resolve().parents[2]

# A TEI page of a pod that has queued inputs, with the te_queue_size line dropped (as a relabel rule would).
SERVED_WITHOUT_QUEUE = ("# TYPE te_request_count counter\nte_request_count{method=\"single\"} 5\n"
                        "# TYPE te_request_success counter\nte_request_success{method=\"single\"} 5\n"
                        "# TYPE te_batch_next_tokens histogram\nte_batch_next_tokens_bucket{le=\"1\"} 2\n"
                        "te_batch_next_tokens_bucket{le=\"+Inf\"} 7\nte_batch_next_tokens_sum 900\n"
                        "te_batch_next_tokens_count 7\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def send(url: str, requests: int, inputs: int = 4) -> None:
    async with aiohttp.ClientSession() as session:
        async def one() -> None:
            async with session.post(f"{url}/embed", json={"inputs": ["hello world " * 20] * inputs}) as r:
                assert r.status == 200
        await asyncio.gather(*(one() for _ in range(requests)))


# -- parsing ----------------------------------------------------------------------------------------------------
async def test_parse_reads_the_emulators_real_exposition():
    async with EmulatorServer(EmulatorConfig(port=0, tokens_per_second=1e6)) as server:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/metrics") as r:
                idle = parse_tei_metrics(await r.text())
            await send(server.url, 5)
            async with session.get(f"{server.url}/metrics") as r:
                busy = parse_tei_metrics(await r.text())
    # A fresh TEI has no series at all: a successful read of nothing is zero, not an error.
    assert idle == RawSample()
    assert busy.requests == 5 and busy.successes == 5
    assert busy.batch_count >= 1 and busy.batch_tokens_sum > 0
    assert busy.zero_batches <= busy.batch_count


def test_parse_accepts_counters_with_and_without_total_and_refuses_garbage():
    text = ("# TYPE te_request_count counter\nte_request_count{method=\"single\"} 3\n"
            "te_request_count{method=\"batch\"} 4\n"
            "# TYPE te_request_failure counter\nte_request_failure{err=\"overloaded\"} 2\n"
            "te_request_failure{err=\"validation\"} 9\n"
            "# TYPE te_batch_next_tokens histogram\nte_batch_next_tokens_bucket{le=\"1\"} 2\n"
            "te_batch_next_tokens_bucket{le=\"+Inf\"} 5\nte_batch_next_tokens_sum 700\nte_batch_next_tokens_count 5\n"
            "# TYPE te_queue_size gauge\nte_queue_size 11\n")
    sample = parse_tei_metrics(text)
    assert (sample.requests, sample.overloaded, sample.zero_batches, sample.batch_count) == (7, 2, 2, 5)
    assert (sample.batch_tokens_sum, sample.queue_size) == (700, 11)
    with pytest.raises(ScrapeError, match="Prometheus text format"):
        parse_tei_metrics("te_queue_size{oops 1\n")


@pytest.mark.parametrize(("body", "words"), [
    ("<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n", "not the Prometheus text format"),
    ('{"error": "Unhealthy", "error_type": "Unhealthy"}', "not the Prometheus text format"),
    ("# TYPE go_goroutines gauge\ngo_goroutines 12\n", "no TEI metric"),
    (SERVED_WITHOUT_QUEUE, "te_queue_size is missing although te_batch_next_tokens_count and te_request_success"),
])
def test_parse_refuses_pages_that_are_not_a_tei_exposition(body, words):
    with pytest.raises(ScrapeError, match=words):
        parse_tei_metrics(body)


def test_parse_reads_only_the_zero_bucket_and_the_overloaded_failures_whatever_the_other_labels():
    text = ('te_batch_next_tokens_bucket{le="1"} 4\nte_batch_next_tokens_bucket{le="16"} 9\n'
            'te_batch_next_tokens_bucket{pod="a",le="1.0"} 1\nte_request_failure{err="validation"} 7\n'
            'te_request_failure_total{pod="y", err="overloaded"} 2\nte_queue_size 1\n')
    sample = parse_tei_metrics(text)
    assert (sample.zero_batches, sample.overloaded, sample.queue_size) == (5, 2, 1)
    with pytest.raises(ScrapeError, match="line 3"):
        parse_tei_metrics("te_queue_size 1\n# a comment\nte_request_count{method=\"single\" 1\n")


def test_parse_reads_an_idle_tei_as_zero():
    # An idle TEI answers an empty page; one that only refused requests (validation) has te_request_count and,
    # rightly, no te_queue_size: TEI counts a request before refusing it, and never queued an input.
    assert parse_tei_metrics("") == RawSample()
    refused = ("# TYPE te_request_count counter\nte_request_count{method=\"single\"} 3\n"
               "# TYPE te_request_failure counter\nte_request_failure{err=\"validation\"} 3\n")
    assert parse_tei_metrics(refused) == RawSample(requests=3)


def test_content_type_of_a_metrics_page():
    for ok in (None, "", "text/plain; charset=utf-8", "text/plain; version=0.0.4",
               "application/openmetrics-text; version=1.0.0"):
        check_content_type(ok)
    for bad in ("text/html; charset=utf-8", "application/json"):
        with pytest.raises(ScrapeError, match=bad.split(";")[0]):
            check_content_type(bad)


# -- rates ------------------------------------------------------------------------------------------------------
def test_counter_increase_counts_a_reset_as_a_restart_from_zero():
    assert counter_increase([10, 15, 25]) == 15
    # 10 -> 15 (+5), reset to 3 (+3), 3 -> 8 (+5)
    assert counter_increase([10, 15, 3, 8]) == 13
    assert counter_increase([5]) == 0


def test_history_rates_over_the_window_with_a_reset():
    h = PodHistory(window=10)
    h.add(100.0, RawSample(requests=100, queue_size=4))
    assert h.metrics().request_rate is None  # one sample: a rate is not known yet (not zero)
    h.add(102.0, RawSample(requests=120, queue_size=8))
    h.add(104.0, RawSample(requests=10, queue_size=0))  # the pod's TEI restarted: counter reset
    m = h.metrics()
    assert m.observed_at == 104.0
    assert m.request_rate == pytest.approx((20 + 10) / 4)
    assert m.queue_size == pytest.approx(4.0)  # averaged over the window
    h.add(130.0, RawSample(requests=70, queue_size=2))  # long gap: the two newest are kept
    m = h.metrics()
    assert m.request_rate == pytest.approx(60 / 26)
    assert m.queue_size == 2


# -- staleness and aggregation ----------------------------------------------------------------------------------
def pod(name: str, ready_since: float | None = 0.0) -> PodTarget:
    return PodTarget("ns", name, f"uid-{name}", "127.0.0.1", 80, ready_since)


def test_stale_or_missing_pod_makes_the_service_unknown_never_zero():
    svc = ServiceTarget("ns", "svc", (pod("a"), pod("b")))
    fresh = PodMetrics(observed_at=100.0, queue_size=3, request_rate=2.0)
    stale = PodMetrics(observed_at=30.0, queue_size=0)
    ok = aggregate(svc, SourceResult({"uid-a": fresh, "uid-b": fresh}), 101.0, stale_seconds=60,
                   fresh_grace_seconds=60)
    assert ok.error is None and ok.queue_size_total == 6 and ok.request_rate == 4.0
    old = aggregate(svc, SourceResult({"uid-a": fresh, "uid-b": stale}), 101.0, stale_seconds=60,
                    fresh_grace_seconds=60)
    assert old.error and "pod b" in old.error and old.queue_size_total is None
    # when it was last read, not its age: the message (and the status that quotes it) stays while the outage lasts
    assert "last read at 1970-01-01T00:00:30Z, more than 60s ago" in old.error
    later = aggregate(svc, SourceResult({"uid-a": fresh, "uid-b": stale}), 160.0, stale_seconds=60,
                      fresh_grace_seconds=60)
    assert later.error.replace("pod a: metrics last read at 1970-01-01T00:01:40Z, more than 60s ago; ", "") == \
        old.error
    missing = aggregate(svc, SourceResult({"uid-a": fresh}, pod_errors={"uid-b": "connection refused"}), 101.0,
                        stale_seconds=60, fresh_grace_seconds=60)
    assert missing.error and "connection refused" in missing.error
    down = aggregate(svc, SourceResult({}, error="Prometheus down"), 101.0, stale_seconds=60, fresh_grace_seconds=60)
    assert down.error == "Prometheus down" and down.queue_size_total is None


def test_a_pod_that_just_turned_ready_and_was_not_read_yet_is_listed_not_an_error():
    svc = ServiceTarget("ns", "svc", (pod("a"), pod("new", ready_since=95.0)))
    m = aggregate(svc, SourceResult({"uid-a": PodMetrics(observed_at=100.0, queue_size=5)}), 100.0,
                  stale_seconds=60, fresh_grace_seconds=30)
    assert m.error is None and m.unread_pods == ("new",) and m.queue_size_total == 5


def test_nonempty_batches_leave_the_zero_size_ones_out():
    svc = ServiceTarget("ns", "svc", (pod("a"),))
    m = aggregate(svc, SourceResult({"uid-a": PodMetrics(100.0, 0, batch_tokens_rate=900, batch_count_rate=5,
                                                          zero_batch_rate=2)}), 100.0, stale_seconds=60,
                  fresh_grace_seconds=60)
    assert m.nonempty_batch_rate == 3 and m.batch_tokens_rate_sum == 900


# -- the scrape source against a real emulator --------------------------------------------------------------------
async def test_scrape_source_reads_a_real_emulator_and_goes_stale_when_it_stops():
    clock = [1000.0]
    async with EmulatorServer(EmulatorConfig(port=0, tokens_per_second=1e6)) as server:
        target = PodTarget("ns", "p", "uid-p", "127.0.0.1", server.port, 0.0)
        svc = ServiceTarget("ns", "svc", (target,))
        source = ScrapeSource(KeepAliveFetcher(), timeout=2, window=30, clock=lambda: clock[0])
        first = await source.fetch([svc], clock[0])
        assert first.pods["uid-p"].request_rate is None  # one sample: no rate yet
        await send(server.url, 8)
        clock[0] += 4
        second = await source.fetch([svc], clock[0])
        m = second.pods["uid-p"]
        assert m.request_rate == pytest.approx(8 / 4)
        assert m.success_rate == pytest.approx(8 / 4)
        assert m.batch_tokens_rate > 0
    # The emulator is gone: the last sample is still returned (younger than the stale limit), then goes stale.
    clock[0] += 2
    third = await source.fetch([svc], clock[0])
    assert "uid-p" in third.pod_errors
    agg = aggregate(svc, third, clock[0], stale_seconds=10, fresh_grace_seconds=10)
    assert agg.error is None  # 2 s old: still valid
    clock[0] += 20
    fourth = await source.fetch([svc], clock[0])
    agg = aggregate(svc, fourth, clock[0], stale_seconds=10, fresh_grace_seconds=10)
    assert agg.error and "more than 10s ago" in agg.error and agg.queue_size_total is None
    await source.close()


async def test_scrape_timeout_is_per_pod_and_named():
    async def slow(_pod: PodTarget) -> str:
        await asyncio.sleep(5)
        return ""

    async def fast(_pod: PodTarget) -> str:
        return "# TYPE te_queue_size gauge\nte_queue_size 7\n"

    async def by_pod(p: PodTarget) -> str:
        return await (slow(p) if p.name == "slow" else fast(p))

    source = ScrapeSource(by_pod, timeout=0.2, window=10)
    svc = ServiceTarget("ns", "svc", (pod("slow"), pod("fast")))
    started = time.monotonic()
    result = await source.fetch([svc], 100.0)
    assert time.monotonic() - started < 2
    assert result.pods["uid-fast"].queue_size == 7
    assert "within 0.2s" in result.pod_errors["uid-slow"]


@asynccontextmanager
async def serve(routes: dict[str, tuple[str, str, float]]):
    """A local HTTP server: path -> (body, content type, delay in seconds). Yields its base URL."""
    async def handler(request: web.Request) -> web.Response:
        body, content_type, delay = routes[request.path]
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text=body, content_type=content_type)

    app = web.Application()
    for path in routes:
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port the OS picked
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def target_of(url: str, name: str = "p") -> PodTarget:
    return PodTarget("ns", name, f"uid-{name}", "127.0.0.1", int(url.rsplit(":", 1)[1]), 0.0)


async def test_scrape_source_leaves_a_pod_that_answers_an_error_page_unread():
    async with serve({"/metrics": ("", "text/html", 0)}) as url:
        source = ScrapeSource(KeepAliveFetcher(), timeout=2, window=30)
        svc = ServiceTarget("ns", "svc", (target_of(url),))
        result = await source.fetch([svc], 100.0)
        await source.close()
    assert "uid-p" not in result.pods and "Content-Type text/html" in result.pod_errors["uid-p"]
    agg = aggregate(svc, result, 100.0, stale_seconds=60, fresh_grace_seconds=60)
    assert agg.error and "pod p" in agg.error and agg.queue_size_total is None


def kube_at(url: str) -> KubeClient:
    """A real KubeClient whose API server is the local test server (no credentials: plain HTTP on loopback)."""
    return KubeClient.for_host(url)


@asynccontextmanager
async def default_executor_blocked(loop: asyncio.AbstractEventLoop):
    """asyncio's default executor with its only thread busy for the duration: what a burst of slow KubeClient
    calls does to the shared pool."""
    release = threading.Event()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    busy = loop.run_in_executor(None, release.wait, 30)
    try:
        yield
    finally:
        release.set()
        await busy


@pytest.mark.slow  # waits out scrape timeouts: ~5 s
async def test_proxy_fetcher_needs_no_thread_and_keeps_the_scrape_timeout():
    proxy = proxy_path("ns", "p", 80)
    slow = proxy_path("ns", "slow", 80)
    page = "# TYPE te_queue_size gauge\nte_queue_size 4\n"
    async with serve({proxy: (page, "text/plain", 0), slow: (page, "text/plain", 5)}) as url:
        fetcher = ApiProxyFetcher(kube_at(url), timeout=0.5)
        source = ScrapeSource(fetcher, timeout=0.5, window=30)
        assert source.concurrency == fetcher.max_concurrency  # no scrape waits for a connection inside its timeout
        async with default_executor_blocked(asyncio.get_running_loop()):
            threads = threading.active_count()  # with the default executor's blocked thread
            result = await asyncio.wait_for(source.fetch([ServiceTarget("ns", "svc", (
                PodTarget("ns", "p", "uid-p", None, 80, 0.0),))], 100.0), 3)
            assert result.pods["uid-p"].queue_size == 4
            assert threading.active_count() == threads  # the asyncio client: no pool of threads of its own
        # The GET itself gives up at the scrape timeout (not a fixed 10 s), so its connection is free again soon.
        started = time.monotonic()
        with pytest.raises(ScrapeError, match="proxy/metrics"):
            await fetcher(PodTarget("ns", "slow", "uid-slow", None, 80, 0.0))
        assert time.monotonic() - started < 2
        await source.close()


def test_urls():
    assert proxy_path("search", "bge-m3-7d9f-abc", 80) == "/api/v1/namespaces/search/pods/bge-m3-7d9f-abc:80/proxy/metrics"
    assert pod_ip_url("127.1.0.5", 80) == "http://127.1.0.5:80/metrics"
    assert pod_ip_url("fd00::1", 80) == "http://[fd00::1]:80/metrics"
    with pytest.raises(ValueError, match="port"):
        proxy_path("ns", "p", 0)
    assert resolve_scrape_via("auto", {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}) == "podip"
    assert resolve_scrape_via("auto", {}) == "proxy"
    assert resolve_scrape_via("proxy", {"KUBERNETES_SERVICE_HOST": "x"}) == "proxy"
    with pytest.raises(ValueError, match="scrape_via"):
        resolve_scrape_via("direct", {})


# -- Prometheus ---------------------------------------------------------------------------------------------------
def test_queries_are_one_per_signal_whatever_the_number_of_services():
    few = build_queries("namespace", "pod", 60, ["a"])
    many = build_queries("namespace", "pod", 60, [f"ns{i}" for i in range(50)])
    assert len(few) == len(many) == 11  # 9 signals (signals.SIGNAL_SERIES), the latency histogram, freshness
    assert 'namespace=~"a"' in few["queue"] and "[60s]" in few["tokens"]
    assert 'err="overloaded"' in few["overloaded"]
    custom = build_queries("kubernetes_namespace", "kubernetes_pod_name", 30)
    assert "sum by (kubernetes_namespace, kubernetes_pod_name)" in custom["requests"]
    with pytest.raises(ValueError, match="prometheus_pod_label"):
        build_queries("namespace", "pod-name", 60)


def test_docs_show_the_live_queries():
    """docs/autoscaling-metrics.md shows the queries with placeholders; they must be the ones the source sends."""
    docs = (ROOT / "docs" / "autoscaling-metrics.md").read_text()
    live = build_queries("NSLABEL", "PODLABEL", 60, ["nsone"])
    for name, query in live.items():
        shown = (query.replace("NSLABEL", "{ns}").replace("PODLABEL", "{pod}").replace('"nsone"', '"{nss}"')
                 .replace("[60s]", "[{w}]"))
        assert shown in docs, f"docs/autoscaling-metrics.md does not show the {name} query: {shown}"
    block = re.search(r"```promql\n(.*?)```", docs, re.S).group(1)
    assert len([line for line in block.splitlines() if line and not line.startswith("#")]) == len(live)


def test_a_pod_up_without_te_queue_size_is_idle_unless_it_queued_inputs():
    key = ("ns", "p")
    assert queue_series_lost(key, {"queue": {}, "batches": {}, "successes": {}}) is None
    assert queue_series_lost(key, {"requests": {key: 0.0}, "batches": {}, "successes": {}}) is None
    lost = queue_series_lost(key, {"batches": {key: 0.0}, "successes": {}})
    assert lost and "te_batch_next_tokens_count" in lost and "te_queue_size" in lost


def test_parse_vector_skips_series_without_the_labels():
    vec = parse_vector([{"metric": {"namespace": "a", "pod": "p"}, "value": [1, "2.5"]},
                        {"metric": {"namespace": "a"}, "value": [1, "3"]},
                        {"metric": {"namespace": "a", "pod": "q"}, "value": [1, "NaN"]}], "namespace", "pod")
    assert vec == {("a", "p"): 2.5}


@pytest.fixture
def prometheus_binary() -> str:
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} is missing: `apt-get install prometheus` (CI installs it)")
    return PROMETHEUS


def start_prometheus(workdir: Path, port: int, targets: list[dict]) -> subprocess.Popen:
    (workdir / "targets.json").write_text(json.dumps(targets))
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n- job_name: tei\n  file_sd_configs: [{files: ['" + str(workdir / "targets.json") +
        "'], refresh_interval: 1s}]\n")
    return subprocess.Popen(
        [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=open(workdir / "prometheus.log", "ab"), stdin=subprocess.DEVNULL)


def wait_up(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query=up%3D%3D1", timeout=1) as r:
                if json.loads(r.read())["data"]["result"]:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("Prometheus did not scrape the emulator in time")


def connections_accepted(port: int) -> float:
    """The HTTP connections Prometheus has accepted so far (its own net_conntrack counter on its /metrics, this
    read's included)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('net_conntrack_listener_conn_accepted_total{listener_name="http"}'):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError("Prometheus's /metrics has no net_conntrack_listener_conn_accepted_total")


@pytest.mark.slow  # a real Prometheus scraping an emulator: ~10 s
@pytest.mark.timeout(90)
async def test_prometheus_source_against_a_real_prometheus(prometheus_binary):
    workdir = Path(tempfile.mkdtemp(prefix="tei-prom-unit-"))
    port = free_port()
    async with EmulatorServer(EmulatorConfig(port=0, tokens_per_second=2e5)) as server, \
            EmulatorServer(EmulatorConfig(port=0)) as idle, \
            serve({"/metrics": (SERVED_WITHOUT_QUEUE, "text/plain", 0)}) as dropped:
        proc = start_prometheus(workdir, port, [
            {"targets": [f"127.0.0.1:{server.port}"], "labels": {"namespace": "search", "pod": "bge-0"}},
            {"targets": [f"127.0.0.1:{idle.port}"], "labels": {"namespace": "search", "pod": "bge-idle"}},
            {"targets": [dropped.removeprefix("http://")], "labels": {"namespace": "search", "pod": "bge-2"}}])
        try:
            await asyncio.to_thread(wait_up, port)
            source = PrometheusSource(f"http://127.0.0.1:{port}", window=10, timeout=3)
            svc = ServiceTarget("search", "bge", tuple(PodTarget("search", f"bge-{n}", f"uid-{n}", None, 80, 0.0)
                                                       for n in ("0", "1", "2", "idle")))
            for _ in range(6):  # a few seconds of steady load, so rate() has samples on both sides
                await send(server.url, 10)
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.5)
            # The queries run in the source's own threads: a busy default executor (KubeClient calls) does not
            # hold them up.
            async with default_executor_blocked(asyncio.get_running_loop()):
                result = await asyncio.wait_for(source.fetch([svc], time.time()), 10)
            assert result.error is None
            m = result.pods["uid-0"]
            assert m.request_rate and m.request_rate > 0
            assert m.batch_tokens_rate and m.batch_tokens_rate > 0
            # The latency histogram per bucket bound, ascending, +Inf last, cumulative; and the batch time.
            les = [le for le, _ in m.duration_bucket_rates]
            assert les == sorted(les) and les[-1] == float("inf") and len(les) > 10
            counts = [c for _, c in m.duration_bucket_rates]
            assert counts == sorted(counts) and counts[-1] > 0
            assert m.inference_count_rate and m.inference_seconds_rate and m.inference_seconds_rate > 0
            assert abs(time.time() - m.observed_at) < 5
            assert "uid-1" not in result.pods and "not scraped" in result.pod_errors["uid-1"]
            # Never served a request: no te_* series at all, and that is an idle pod.
            assert result.pods["uid-idle"].queue_size == 0 and "uid-idle" not in result.pod_errors
            # Served requests, te_queue_size gone: unread, never an empty queue.
            assert "uid-2" not in result.pods and "te_queue_size is missing" in result.pod_errors["uid-2"]
            # Later ticks' queries go over the connections the threads opened (a client per thread, kept): three
            # more ticks of 11 queries open a connection only for a query thread that had none (the pool starts
            # its threads as it needs them), at most one per thread in all. Each read of the counter opens one.
            before, opened = await asyncio.to_thread(connections_accepted, port), source._clients.opened  # noqa: SLF001
            for _ in range(3):
                again = await source.fetch([svc], time.time())
                assert again.error is None and again.pods["uid-0"].request_rate
            new_connections = await asyncio.to_thread(connections_accepted, port) - before - 1
            assert new_connections == source._clients.opened - opened  # noqa: SLF001
            assert source._clients.opened <= len(QUERY_NAMES)  # noqa: SLF001
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        down = await source.fetch([svc], time.time())
        assert down.error and "failed" in down.error and not down.pods
        await source.close()
    shutil.rmtree(workdir, ignore_errors=True)


async def test_prometheus_source_refuses_a_missing_url():
    with pytest.raises(ValueError, match="TEI_OPERATOR_PROMETHEUS_URL"):
        PrometheusSource("", window=60, timeout=5)


def test_absorb_pages_reads_the_batch_time_and_an_unreadable_page_leaves_the_pod_unread():
    """The HTTP-free entry of the scrape source (what the benchmark's simulated operator drives)."""
    def page(requests: int, seconds: float) -> str:
        return ("# TYPE te_queue_size gauge\nte_queue_size 3\n"
                "# TYPE te_request_inference_duration histogram\n"
                f'te_request_inference_duration_bucket{{le="+Inf"}} {requests}\n'
                f"te_request_inference_duration_sum {seconds}\n"
                f"te_request_inference_duration_count {requests}\n")

    source = ScrapeSource(lambda pod: None, timeout=1, window=10)
    source.absorb_pages({"a": page(10, 0.5), "b": page(0, 0)}, now=100.0)
    result = source.absorb_pages({"a": page(30, 1.5), "b": "<html>oops</html>"}, now=102.0)
    a = result.pods["a"]
    assert a.inference_count_rate == pytest.approx(10.0) and a.inference_seconds_rate == pytest.approx(0.5)
    assert "not the Prometheus text format" in result.pod_errors["b"]
    service = ServiceTarget("ns", "s", (PodTarget("ns", "a", "a", None),))
    metrics = aggregate(service, result, 102.0, stale_seconds=60, fresh_grace_seconds=60)
    assert metrics.mean_batch_seconds == pytest.approx(0.05)


# -- the kept-alive fetcher (a minimal HTTP/1.1 client: what the fast path reads every pod with) --------------------
async def test_keep_alive_fetcher_reads_every_kind_of_answer_and_keeps_one_connection_per_pod():
    peers: list = []

    async def plain(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(text="te_queue_size 3\n", content_type="text/plain")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in ("# TYPE te_queue_size gauge\n", "te_queue_size 5\n", "te_request_count 9\n"):
            await response.write(part.encode())
        await response.write_eof()
        return response

    async def closing(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="te_queue_size 1\n", content_type="text/plain")
        response.force_close()
        return response

    async def missing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="loading")

    app = web.Application()
    for path, handler in (("/metrics", plain), ("/c/metrics", chunked), ("/x/metrics", closing),
                          ("/e/metrics", missing)):
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    fetcher = KeepAliveFetcher()
    try:
        target = PodTarget("ns", "p", "uid-p", "127.0.0.1", port, 0.0)
        assert [await fetcher(target) for _ in range(3)] == ["te_queue_size 3\n"] * 3
        assert len(peers) == 3 and len(set(peers)) == 1  # three GETs, one connection
        # Beyond its limit of kept connections, the least recently used one is closed (file descriptors).
        second = web.TCPSite(runner, "127.0.0.1", 0)  # another pod: the same server on another port
        await second.start()
        other = PodTarget("ns", "p2", "uid-p2", "127.0.0.1", second._server.sockets[0].getsockname()[1], 0.0)  # noqa: SLF001
        capped = KeepAliveFetcher(max_connections=1)
        assert await capped(target) == await capped(other) == "te_queue_size 3\n"
        assert list(capped._connections) == [("127.0.0.1", other.port)]  # noqa: SLF001 - the older one closed
        await capped.close()
        # The other answers, through the same code (a path prefix stands for another server here).
        import tei_operator.autoscaling.sources.scrape as scrape
        for prefix, expected in (("/c", "# TYPE te_queue_size gauge\nte_queue_size 5\nte_request_count 9\n"),
                                 ("/x", "te_queue_size 1\n")):
            scrape.METRICS_PATH, saved = prefix + "/metrics", scrape.METRICS_PATH
            try:
                other = PodTarget("ns", "q", "uid-q", "127.0.0.1", port, 0.0)
                assert await fetcher(other) == expected
                assert await fetcher(other) == expected  # again: reconnects after a close
            finally:
                scrape.METRICS_PATH = saved
        scrape.METRICS_PATH, saved = "/e/metrics", scrape.METRICS_PATH
        try:
            with pytest.raises(ScrapeError, match="answered 503"):
                await fetcher(PodTarget("ns", "r", "uid-r", "127.0.0.1", port, 0.0))
        finally:
            scrape.METRICS_PATH = saved
    finally:
        await fetcher.close()
        await runner.cleanup()


async def test_keep_alive_fetcher_names_what_went_wrong():
    async def answer(raw: bytes):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(raw)
            await writer.drain()
            writer.close()

        return await asyncio.start_server(handle, "127.0.0.1", 0)

    fetcher = KeepAliveFetcher()
    for raw, words in ((b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.1 response"),
                       (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "closed within the HTTP body"),
                       (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nhi",
                        "Content-Type text/html")):
        server = await answer(raw)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ScrapeError, match=words):
            await fetcher(PodTarget("ns", "p", "uid-p", "127.0.0.1", port, 0.0))
        server.close()
        await server.wait_closed()
    with pytest.raises(ScrapeError, match="ConnectionRefusedError"):
        await fetcher(PodTarget("ns", "p", "uid-p", "127.0.0.1", port, 0.0))
    await fetcher.close()
