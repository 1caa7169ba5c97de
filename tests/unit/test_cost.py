"""status.cost: the pure figures, the GPU price setting, and the token rate read from real emulators' /metrics.

TEI facts relied on (/work/shared/TEI.md): te_request_input_length is a histogram of tokens per input, so its _sum
grows by the tokens of every input TEI runs; a series appears only after its first observation. GPU prices and
throughput quoted there: A100 ~$1.04/h and ~60,000 tokens/s for BGE-M3.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tei_operator.controller.cost import TokenRateMeter, cost_status, quoted_cost_table, token_counter
from tei_operator.emulator import fake_model
from tei_operator.emulator.config import EmulatorConfig
from tei_operator.emulator.server import EmulatorServer
from tei_operator.settings import DEFAULT_GPU_PRICES, SettingsError, load_settings

pytestmark = pytest.mark.timeout(30)


def test_cost_of_an_a100_fleet_at_the_quoted_bge_m3_rate() -> None:
    cost = cost_status(gpu_type="a100", gpus_per_replica=1, replicas=3, prices=DEFAULT_GPU_PRICES,
                       tokens_per_second=3 * 60_000)
    # 3 GPUs x $1.04 = $3.12/h; 180,000 tokens/s = 648M tokens/h -> $0.004815 per 1M tokens
    assert cost == {"gpuType": "a100", "dollarsPerGpuHour": 1.04, "gpus": 3, "dollarsPerHour": 3.12,
                    "tokensPerSecond": 180000.0, "dollarsPerMillionTokens": 0.004815}


def test_cost_without_price_gpu_or_tokens() -> None:
    prices = {"h100": 2.0, "default": 1.5}
    assert cost_status(gpu_type="l4", gpus_per_replica=1, replicas=2, prices=prices, tokens_per_second=1) is None
    assert cost_status(gpu_type=None, gpus_per_replica=0, replicas=2, prices=prices, tokens_per_second=1) is None
    unset = cost_status(gpu_type=None, gpus_per_replica=2, replicas=2, prices=prices, tokens_per_second=None)
    assert unset == {"gpuType": "default", "dollarsPerGpuHour": 1.5, "gpus": 4, "dollarsPerHour": 6.0}
    idle = cost_status(gpu_type="h100", gpus_per_replica=1, replicas=1, prices=prices, tokens_per_second=0.0)
    assert idle is not None and idle["tokensPerSecond"] == 0 and "dollarsPerMillionTokens" not in idle


def test_gpu_prices_setting(monkeypatch) -> None:
    assert load_settings().gpu_prices == DEFAULT_GPU_PRICES
    monkeypatch.setenv("TEI_OPERATOR_GPU_PRICES", "l4=0.8, default=1.1")
    assert load_settings().gpu_prices == {"l4": 0.8, "default": 1.1}
    for bad, message in (("l4", "expected GPU_TYPE=DOLLARS_PER_HOUR"), ("z9=1", "'z9' is not a GPU type"),
                         ("l4=cheap", "is not a number"), ("l4=-1", "between 0 and 1000")):
        monkeypatch.setenv("TEI_OPERATOR_GPU_PRICES", bad)
        with pytest.raises(SettingsError, match="TEI_OPERATOR_GPU_PRICES") as caught:
            load_settings()
        assert message in str(caught.value)


def test_token_counter_reads_the_input_length_sum() -> None:
    assert token_counter("") == 0.0
    page = "# TYPE te_request_input_length histogram\nte_request_input_length_bucket{le=\"+Inf\"} 2\n" \
           "te_request_input_length_sum 130\nte_request_input_length_count 2\n"
    assert token_counter(page) == 130.0


def full_parser_token_counter(text: str) -> float:
    """What the Prometheus text format's own parser reads for the counter (the reference the scan must match)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "te_request_input_length_sum")


async def test_token_counter_matches_the_full_parser_on_real_pages() -> None:
    from bench.scale.fakepods import IDLE_METRICS

    config = EmulatorConfig(port=0, dimensions=8, tokens_per_second=1e6)
    async with EmulatorServer(config) as server, aiohttp.ClientSession() as session:
        pages = []
        for inputs in ([], ["one two three"], ["w " * 40] * 5):
            if inputs:
                async with session.post(f"{server.url}/embed", json={"inputs": inputs}) as response:
                    assert response.status == 200
            async with session.get(f"{server.url}/metrics") as response:
                pages.append(await response.text())
    pages.append(IDLE_METRICS)  # the scale benchmark's pods
    values = [token_counter(page) for page in pages]
    assert values == [full_parser_token_counter(page) for page in pages]
    assert values[1] > values[0] and values[2] > values[1]  # the emulator counted the tokens: not all zeros
    # A labelled series (a scraper in between may add labels) and a broken value.
    assert token_counter('te_request_input_length_sum{pod="a"} 7\nte_request_input_length_sum{pod="b"} 5\n') == 12
    with pytest.raises(ValueError):
        token_counter("te_request_input_length_sum NaN-ish\n")


def ready_pod(name: str, port: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}"},
            "spec": {"containers": [{"name": "tei", "ports": [{"containerPort": port}]}]},
            "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}


async def test_meter_measures_the_tokens_the_pods_served() -> None:
    config = EmulatorConfig(port=0, dimensions=8, tokens_per_second=1e6)
    async with EmulatorServer(config) as a, EmulatorServer(config) as b, aiohttp.ClientSession() as session:
        meter = TokenRateMeter(None, scrape_via="podip", interval=0.3)
        rounds = asyncio.Queue()
        meter.notify = rounds.put_nowait
        pods = [ready_pod("a", a.port), ready_pod("b", b.port)]
        assert meter.tokens_per_second("svc", "ns", pods) is None  # starts the first round

        async def first_readings() -> None:
            while not all(meter._samples.get(f"uid-{n}") for n in "ab"):  # noqa: SLF001 - round one's readings
                await asyncio.sleep(0.01)

        await asyncio.wait_for(first_readings(), 5)
        assert rounds.empty()  # one reading per pod: no rate yet, nothing moved, no status refresh asked
        texts = [" ".join(f"w{i}" for i in range(20))] * 8  # 8 x 26 tokens to each pod
        for server in (a, b):
            async with session.post(f"{server.url}/embed", json={"inputs": texts}) as response:
                assert response.status == 200
        # The meter starts round two by itself after the interval; the rate it finds is new: a refresh is asked.
        await asyncio.wait_for(rounds.get(), 5)
        rate = meter.tokens_per_second("svc", "ns", pods)
        sent = 8 * fake_model.count_tokens(texts[0])
        for name in ("a", "b"):
            samples = meter._samples[f"uid-{name}"]  # noqa: SLF001 - the readings behind the rate
            assert samples.latest[1] - samples.previous[1] == sent
        elapsed = meter._samples["uid-a"].latest[0] - meter._samples["uid-a"].previous[0]  # noqa: SLF001
        assert rate == pytest.approx(2 * sent / elapsed, rel=0.2) and rate > 0
        # No more traffic: the next round finds 0 tokens/s (moved: a refresh), the ones after it 0 again (none).
        await asyncio.wait_for(rounds.get(), 5)
        assert meter.tokens_per_second("svc", "ns", pods) == 0
        reads = meter.reads
        while meter.reads < reads + 4:  # two more rounds
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        assert rounds.empty()
        await meter.close()


async def test_meter_round_skips_a_pod_it_cannot_read_and_keeps_the_others() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on: the pod went away
        s.bind(("127.0.0.1", 0))
        gone = s.getsockname()[1]
    async with EmulatorServer(EmulatorConfig(port=0, dimensions=8)) as a:
        meter = TokenRateMeter(None, scrape_via="podip", interval=60, timeout=1)
        meter.tokens_per_second("svc", "ns", [ready_pod("a", a.port), ready_pod("gone", gone)])
        round_one = meter._rounds["svc"]  # noqa: SLF001 - the round the call started
        await asyncio.wait_for(round_one, 5)
        assert meter.reads == 2
        assert "uid-a" in meter._samples and "uid-gone" not in meter._samples  # noqa: SLF001
        await meter.close()


def test_docs_cost_table_is_what_the_command_prints() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cost.md").read_text()
    assert quoted_cost_table(DEFAULT_GPU_PRICES) in docs, "rerun: python -m tei_operator.controller.cost"


async def test_rounds_due_together_are_one_sweep_of_all_their_pods() -> None:
    sweeps: list[list[str]] = []

    class Pages:
        async def fetch_many(self, targets, timeout):
            sweeps.append(sorted(t.uid for t in targets))
            return ["te_request_input_length_sum 100\n"] * len(targets)

        async def __call__(self, target):  # pragma: no cover - fetch_many is used
            raise AssertionError("a pod read alone")

    meter = TokenRateMeter(None, interval=0.5, fetch=Pages())
    for name in ("a", "b", "c"):
        meter.tokens_per_second(f"svc-{name}", "ns", [ready_pod(name, 80)])
    await asyncio.wait_for(meter._rounds["svc-a"], 5)  # noqa: SLF001 - the batch the rounds are in
    assert sweeps == [["uid-a", "uid-b", "uid-c"]]
    while len(sweeps) < 2:  # the next rounds start by themselves, due together again
        await asyncio.sleep(0.02)
    assert sweeps[1] == ["uid-a", "uid-b", "uid-c"] and meter.reads == 6
    await meter.close()
