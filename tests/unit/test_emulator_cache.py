"""The emulator's start-up time with and without a warm model cache: cold = download + load, warm = load only
(spec.cache.managed pods start warm: they get HF_HUB_OFFLINE=1 and MODEL_ID pointing at the snapshot)."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from tei_operator.emulator.config import EmulatorConfig, EmulatorConfigError, parse_config
from tei_operator.emulator.server import EmulatorServer

SHA = "5617a9f61b028005a4858fdac845db406aefb181"
TIMES = {"EMULATOR_LOAD_SECONDS": "20", "EMULATOR_DOWNLOAD_SECONDS": "60"}


def config(**env: str) -> EmulatorConfig:
    return parse_config([], {"MODEL_ID": "BAAI/bge-m3", **TIMES, **env})


def test_a_cold_cache_downloads_then_loads():
    cold = config()
    assert cold.cache_is_warm() is False
    assert cold.startup_seconds() == 80.0


def test_hub_offline_means_the_files_are_local():
    assert config(HF_HUB_OFFLINE="1").startup_seconds() == 20.0
    assert config(HF_HUB_OFFLINE="0").startup_seconds() == 80.0


def test_a_snapshot_in_the_hub_cache_is_warm(tmp_path):
    snapshot = tmp_path / "models--BAAI--bge-m3" / "snapshots" / SHA
    assert config(HUGGINGFACE_HUB_CACHE=str(tmp_path), REVISION=SHA).cache_is_warm() is False
    snapshot.mkdir(parents=True)
    assert config(HUGGINGFACE_HUB_CACHE=str(tmp_path), REVISION=SHA).startup_seconds() == 20.0
    assert config(HUGGINGFACE_HUB_CACHE=str(tmp_path)).cache_is_warm() is True  # any snapshot, no revision
    assert config(HUGGINGFACE_HUB_CACHE=str(tmp_path), REVISION="0" * 40).cache_is_warm() is False


def test_a_model_directory_is_warm_and_the_flag_overrides(tmp_path):
    assert parse_config(["--model-id", str(tmp_path)], TIMES).startup_seconds() == 20.0
    assert parse_config(["--model-id", str(tmp_path), "--warm-cache", "false"], TIMES).startup_seconds() == 80.0
    assert config(EMULATOR_WARM_CACHE="true").startup_seconds() == 20.0
    assert config(HF_HUB_OFFLINE="1", EMULATOR_WARM_CACHE="false").startup_seconds() == 80.0


@pytest.mark.parametrize("argv, env, message", [
    (["--download-seconds", "-1"], {}, "--download-seconds: must be 0 or more"),
    ([], {"EMULATOR_WARM_CACHE": "maybe"}, "EMULATOR_WARM_CACHE: expected true or false"),
    ([], {"EMULATOR_DOWNLOAD_SECONDS": "soon"}, "EMULATOR_DOWNLOAD_SECONDS: expected a number"),
])
def test_bad_values_name_the_setting(argv, env, message):
    with pytest.raises(EmulatorConfigError) as err:
        parse_config(argv, env)
    assert message in str(err.value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("warm", [True, False])
async def test_the_port_opens_after_the_download_only_on_a_cold_cache(warm):
    port = free_port()
    server = EmulatorServer(EmulatorConfig(port=port, dimensions=8, download_seconds=0.6, warm_cache=warm))
    starting = asyncio.create_task(server.start())
    try:
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as session:
            if warm:  # listening already: no download to wait out
                async with session.get(f"http://127.0.0.1:{port}/health") as response:
                    assert response.status == 200
            else:
                with pytest.raises(aiohttp.ClientConnectorError):
                    await session.get(f"http://127.0.0.1:{port}/health")
        await asyncio.wait_for(starting, timeout=5)
    finally:
        if starting.done() and not starting.exception():
            await server.stop()
        else:
            starting.cancel()
