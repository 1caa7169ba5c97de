"""`tei-operator bench`: the probe against a real emulator on 127.0.0.1 with the slow cpu-small profile (no mocks),
and the recommendations as a pure function of the steps."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math

import pytest

from tei_operator.cli import main
from tei_operator.emulator.config import EmulatorConfig
from tei_operator.emulator.engine import batch_seconds
from tei_operator.emulator.fake_model import count_tokens
from tei_operator.emulator.batching import load_profile
from tei_operator.emulator.server import EmulatorServer
from tei_operator.probe import ProbeReport, Step, concurrency_steps, recommend, run_probe

pytestmark = pytest.mark.timeout(40)

INPUTS, WORDS = 4, 100


def physical_capacity(tokens_per_input: int) -> float:
    """cpu-small's tokens/s at its fullest batch of whole requests of INPUTS inputs (the emulator batches inputs
    while they fit max_batch_tokens; a closed loop delivers whole requests)."""
    profile = load_profile("cpu-small")
    config = EmulatorConfig.from_profile(profile, port=0)
    per_request = INPUTS * tokens_per_input
    requests = max(1, config.max_batch_tokens // per_request)
    tokens = requests * per_request
    seconds = batch_seconds(tokens, config.tokens_per_second, config.batch_overhead_seconds,
                            requests * INPUTS * tokens_per_input ** 2, config.seconds_per_token_sq)
    return tokens / seconds


async def test_probe_measures_the_profiles_capacity_and_recommends_from_it() -> None:
    config = EmulatorConfig.from_profile(load_profile("cpu-small"), port=0, dimensions=16)
    async with EmulatorServer(config) as server:
        report = await run_probe(server.url, inputs_per_request=INPUTS, words_per_input=WORDS, step_seconds=2.0,
                                 max_concurrency=8)
    tokens_per_input = count_tokens(" ".join(["w"] * WORDS))
    capacity = physical_capacity(tokens_per_input)
    assert report.max_batch_tokens == config.max_batch_tokens
    assert report.tokens_counted_by == "server /tokenize"
    assert report.tokens_per_input == tokens_per_input + 2  # <s> and </s>, which TEI counts in its batches
    assert report.peak_tokens_per_s == max(s.tokens_per_s for s in report.steps)
    assert abs(report.peak_tokens_per_s - capacity) / capacity < 0.15, (report.peak_tokens_per_s, capacity)
    # It stopped because throughput stopped growing, not at the concurrency bound, and saw no 429s.
    assert "grew by 5% or less" in report.stop_reason
    assert all(s.overloaded == 0 and s.errors == 0 for s in report.steps)
    # Latency grows with concurrency once saturated: a request waits out the others' batches.
    assert report.steps[-1].p50_ms > report.steps[0].p50_ms
    # Batches the server formed, read from te_batch_next_tokens: at least one request's worth.
    assert all(s.mean_batch_tokens >= INPUTS * tokens_per_input * 0.95 for s in report.steps)
    assert report.recommended("peakTokensPerSecond") == round(report.peak_tokens_per_s)
    assert report.recommended("targetQueueSize") == config.max_batch_tokens // report.tokens_per_input
    assert report.recommended("maxBatchTokens") == config.max_batch_tokens


def steps(*rows: tuple[int, float, float, float]) -> ProbeReport:
    report = ProbeReport(url="http://x", model_id="m", max_batch_tokens=2000, inputs_per_request=4,
                         tokens_per_input=100.0, tokens_counted_by="test")
    for conc, tps, p99, batch in rows:
        report.steps.append(Step(conc, 5.0, 10, 10, 0, 0, tps, p99 / 2, p99 * 0.9, p99, batch))
    best = max(report.steps, key=lambda s: s.tokens_per_s)
    report.peak_tokens_per_s, report.peak_concurrency = best.tokens_per_s, best.concurrency
    return report


def test_recommendations_follow_the_measurements() -> None:
    report = steps((1, 3000, 40, 400), (2, 5000, 70, 800), (4, 8000, 130, 1900), (8, 8200, 260, 1950))
    report.recommendations = recommend(report)
    assert report.recommended("peakTokensPerSecond") == 8200
    # first step at >= 70% of the peak (5740 tokens/s) is concurrency 4: its p99 130 ms
    assert report.recommended("latencyTargetMs") == 130
    assert report.recommended("targetQueueSize") == 20  # 2000 / 100
    # fill at the peak 1950/2000 = 0.975; 0.9 x that = 0.8775 -> 0.85
    assert report.recommended("targetBatchFill") == pytest.approx(0.85)
    assert "raise engine.maxBatchTokens" in next(r.derivation for r in report.recommendations
                                                   if r.setting == "maxBatchTokens")
    low = steps((1, 3000, 41, 400), (2, 3050, 80, 500))
    low.recommendations = recommend(low)
    assert low.recommended("latencyTargetMs") == 50
    assert low.recommended("targetBatchFill") == pytest.approx(0.2)  # 0.9 x 0.25 = 0.225 -> 0.2
    assert "keep 2000" in next(r.derivation for r in low.recommendations if r.setting == "maxBatchTokens")


def test_concurrency_steps() -> None:
    assert concurrency_steps(1) == [1]
    assert concurrency_steps(8) == [1, 2, 4, 8]
    assert concurrency_steps(12) == [1, 2, 4, 8, 12]


def test_cli_json_and_bad_input(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["bench", "http://127.0.0.1:9", "--step-seconds", "0"]) == 2
    assert "--step-seconds" in capsys.readouterr().err
    assert main(["bench", "http://127.0.0.1:9", "--texts", str(tmp_path / "missing.txt")]) == 2
    assert "--texts" in capsys.readouterr().err
    assert main(["bench", "http://127.0.0.1:9", "--step-seconds", "0.2"]) == 1
    assert "cannot connect" in capsys.readouterr().err


async def test_cli_prints_json_with_sample_texts(tmp_path) -> None:
    sample = tmp_path / "texts.txt"
    sample.write_text("a short query about gpus\n\nanother text to embed here\n")
    config = EmulatorConfig.from_profile(load_profile("cpu-small"), port=0, dimensions=16)
    async with EmulatorServer(config) as server:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = await asyncio.to_thread(main, ["bench", server.url, "--texts", str(sample), "--json",
                                                   "--step-seconds", "0.5", "--max-concurrency", "2",
                                                   "--inputs-per-request", "2"])
    assert code == 0
    data = json.loads(out.getvalue())
    assert data["steps"][0]["ok"] > 0 and data["tokens_per_input"] < 10
    assert not math.isnan(data["peak_tokens_per_s"])
