"""``lro-async serve --metrics-port``: a real scrape of /metrics over HTTP while operations run."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest
from google.protobuf import duration_pb2
from prometheus_client.parser import text_string_to_metric_families

import lro_async
from lro_async.demo import demo_pb2, demo_pb2_grpc

from ..waiting import until_value

pytestmark = pytest.mark.timeout(90)

CLI = [sys.executable, "-m", "lro_async"]
CONTRIB = Path(__file__).parent.parent.parent / "contrib"
METRICS = ("--metrics-port", "0")
HTTP = ("--http-port", "0")


class Serving:
    def __init__(self, store: Path) -> None:
        self.process = subprocess.Popen(
            [*CLI, "serve", "--port", "0", "--grace", "1", "--store", str(store), *METRICS, *HTTP],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        assert "metrics on http://" in first, first + self.stop()
        self.metrics = first.split("metrics on ")[1].split()[0]
        second = self.process.stdout.readline()
        assert "serving on" in second, second + self.stop()
        self.target = second.split("serving on ")[1].split()[0]
        third = self.process.stdout.readline()
        assert "serving HTTP/JSON on" in third, third + self.stop()
        self.http = "http://" + third.split("serving HTTP/JSON on ")[1].split()[0]

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        _, err = self.process.communicate(timeout=10)
        return err


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Serving]:
    running = Serving(tmp_path / "ops.db")  # SQLite: its calls are measured
    try:
        yield running
    finally:
        running.stop()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape_now(url: str) -> tuple[str, Samples]:
    # No proxy: the server is on 127.0.0.1 whatever http_proxy says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        assert response.status == 200
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(
                (k, v) for k, v in sample.labels.items() if not k.startswith("otel_scope")
            )
            samples[(sample.name, labels)] = sample.value
    return content_type, samples


async def _scrape(url: str) -> Samples:
    content_type, samples = await asyncio.to_thread(_scrape_now, url)
    assert content_type.startswith("text/plain"), content_type
    return samples


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _until(url: str, name: str, value: float, what: str, **labels: str) -> Samples:
    """Scrape until *name* (with *labels*) reads *value*; return that scrape's samples."""
    last: Samples = {}

    async def reached() -> Samples | None:
        nonlocal last
        last = await _scrape(url)
        return last if _get(last, name, **labels) == value else None

    return await until_value(
        reached, what, timeout=20, details=lambda: f"{name} is {_get(last, name, **labels)}"
    )


async def test_a_scrape_while_operations_run_shows_each_figure_move(serving: Serving) -> None:
    url = serving.metrics
    before = await _scrape(url)
    assert _get(before, "lro_async_operations_started_total") == 0
    assert _get(before, "lro_async_operations_running") == 0

    async with grpc.aio.insecure_channel(serving.target) as channel:
        demo = cast("demo_pb2_grpc.DemoAsyncStub", demo_pb2_grpc.DemoStub(channel))
        long = duration_pb2.Duration(seconds=30)
        running = [
            await demo.Sleep(demo_pb2.SleepRequest(parent="projects/p", duration=long, steps=2))
            for _ in range(3)
        ]
        failure = demo_pb2.Failure(code=grpc.StatusCode.ABORTED.value[0], message="told to")
        short = duration_pb2.Duration(nanos=100_000_000)
        await demo.Sleep(
            demo_pb2.SleepRequest(parent="projects/p", duration=short, steps=2, failure=failure)
        )
        during = await _until(
            url,
            "lro_async_operations_finished_total",
            1,
            "the failed operation was never counted under ABORTED",
            code="ABORTED",
        )
        assert _get(during, "lro_async_operations_started_total") == 4
        assert _get(during, "lro_async_operations_running") == 3
        assert _get(during, "lro_async_operations_finished_total", code="OK") == 0
        sleep_ok = {
            "rpc_method": "lro_async.demo.v1.Demo/Sleep",
            "rpc_response_status_code": "OK",
            "rpc_system_name": "grpc",
        }
        assert _get(during, "rpc_server_call_duration_seconds_count", **sleep_ok) == 4

        # The HTTP/JSON face's requests, by route template and status.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url_of = f"{serving.http}/v1/{running[0].name}"
        await asyncio.to_thread(lambda: opener.open(url_of, timeout=10).close())
        get_ok = {
            "http_request_method": "GET",
            "http_route": "/v1/{name=**/operations/*}",
            "http_response_status_code": "200",
        }
        await _until(
            url, "http_server_request_duration_seconds_count", 1, "the GET never counted", **get_ok
        )

        client = lro_async.AsyncOperationsClient(channel)
        try:
            waits = [asyncio.ensure_future(client.operation(op.name).result()) for op in running]
            await _until(url, "lro_async_watches_open", 1, "the client's Watch stream is open")
            for op in running:
                await client.cancel_operation(op.name)
            for wait in waits:
                with pytest.raises(lro_async.OperationCancelled):
                    await wait
        finally:
            await client.aclose()

    await _until(
        url, "lro_async_operations_running", 0, "the cancelled operations still count as running"
    )
    # Histograms are recorded after the loop turn that measured them: a scrape on the
    # metrics thread may come a turn early.
    await _until(url, "lro_async_notice_delay_seconds_count", 3, "three notices never counted")
    after = await _until(
        url,
        "lro_async_operation_duration_seconds_count",
        3,
        "three cancelled durations never counted",
        code="CANCELLED",
    )
    assert _get(after, "lro_async_operations_started_total") == 4
    assert _get(after, "lro_async_operations_finished_total", code="CANCELLED") == 3
    assert _get(after, "lro_async_operations_finished_total", code="ABORTED") == 1
    assert _get(after, "lro_async_operation_duration_seconds_count", code="CANCELLED") == 3
    assert _get(after, "lro_async_notice_delay_seconds_count") == 3
    assert _get(after, "lro_async_store_call_duration_seconds_count", method="finish") >= 4
    assert _get(after, "lro_async_store_errors_total", method="finish") == 0

    # The shipped dashboard and alert rules name only metrics that a real server exports
    # (store errors appear from the first failed store call on).
    exported = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name, _ in after}
    exported.add("lro_async_store_errors")
    for path in (CONTRIB / "grafana" / "lro_async.json", CONTRIB / "prometheus" / "alerts.yml"):
        named = set(re.findall(r"\b(?:lro_async|rpc_server|http_server)_[a-z_]+", path.read_text()))
        named = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in named}
        assert named, path
        assert named <= exported, (path.name, named - exported)


def test_a_taken_metrics_port_is_one_line_and_exit_four(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "serve", "--port", "0", "--store", "memory", "--metrics-port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd=tmp_path,
        )
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"lro-async serve: cannot serve metrics on 127.0.0.1:{port}: ")
    assert "serving on" not in result.stdout
