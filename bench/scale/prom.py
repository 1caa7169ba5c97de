"""A real Prometheus for the benchmark, scraping each of the operator's pods at its pod IP (where
bench/scale/fakepods.py answers for all of them) with the `namespace` and `pod` labels the operator's queries group
by. Debian's Prometheus is built without Kubernetes service discovery, so the benchmark lists the pods once they are
Ready and writes them to a file_sd targets file (`set_targets`)."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

PROMETHEUS = Path("/usr/bin/prometheus")

CONFIG = """global: {{scrape_interval: {interval}s, scrape_timeout: {timeout}s, evaluation_interval: {interval}s}}
scrape_configs:
- job_name: tei
  file_sd_configs: [{{files: ['{targets}'], refresh_interval: 1s}}]
"""


class Prometheus:
    def __init__(self, workdir: Path, port: int, interval: float = 10) -> None:
        if not PROMETHEUS.exists():
            raise RuntimeError(f"{PROMETHEUS} is missing: install it with `apt-get install prometheus`")
        self.workdir = workdir
        self.port = port
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.targets_file = workdir / "targets.json"
        self.targets_file.write_text("[]")
        (workdir / "prometheus.yml").write_text(CONFIG.format(
            interval=int(interval), timeout=max(1, int(interval) // 2), targets=self.targets_file))

    def set_targets(self, pods: list[dict], port: int = 80) -> int:
        """Scrape these pods (those with a pod IP) from now on; returns how many."""
        import json

        targets = [{"targets": [f"{p['status']['podIP']}:{port}"],
                    "labels": {"namespace": p["metadata"]["namespace"], "pod": p["metadata"]["name"]}}
                   for p in pods if (p.get("status") or {}).get("podIP")]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(targets))
        tmp.replace(self.targets_file)
        return len(targets)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        log = open(self.workdir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}; log in {self.workdir}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus did not become ready in {timeout:.0f}s; log in {self.workdir}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def queries_served(self) -> float:
        """Instant queries Prometheus has answered (its own prometheus_http_requests_total, /api/v1/query)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "prometheus_http_requests_total"
                   and s.labels.get("handler") in ("/api/v1/query", "/api/v1/query_range"))

    def targets_up(self) -> int:
        import json
        with urllib.request.urlopen(f"{self.url}/api/v1/targets?state=active", timeout=5) as r:
            data = json.loads(r.read())
        return sum(1 for t in data["data"]["activeTargets"] if t.get("health") == "up")
