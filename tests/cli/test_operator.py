"""Issue 12's command items, each through the real command in a subprocess."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_reflection.v1alpha import reflection_pb2

import lro_async
import lro_async.testing
from lro_async.demo import demo_pb2

from .pki import Files

pytestmark = pytest.mark.timeout(90)

CLI = [sys.executable, "-m", "lro_async"]
ROOT = Path(__file__).parent.parent.parent
GRPC_LOG_LINE = re.compile(r"^[EIWF]\d{4} ", re.MULTILINE)


def _run(
    *args: str, timeout: float = 30, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_run, *args)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line on stderr, checked: no traceback, no gRPC C-core log line."""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and not GRPC_LOG_LINE.search(result.stderr)
    return result.stderr


class Server:
    def __init__(self, *flags: str, cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(
            [*CLI, "serve", "--port", "0", "--grace", "1", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert "serving on" in line, line + self.stop()
        self.target = line.split("serving on ")[1].split()[0]
        self.port = self.target.rsplit(":", 1)[1]

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        _, err = self.process.communicate(timeout=10)
        return err


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server("--store", "memory")
    try:
        yield running
    finally:
        running.stop()


def _start(server: Server, *flags: str) -> str:
    result = _run("start", "sleep", "--target", server.target, *flags)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# -- 2: a taken port -----------------------------------------------------------------


def test_a_second_serve_on_a_taken_port_is_one_line_and_exit_four(server: Server) -> None:
    result = _run("serve", "--port", server.port, "--store", "memory")
    assert result.returncode == 4, result.stdout + result.stderr
    line = _one_line(result)
    assert f"cannot listen on 127.0.0.1:{server.port}: the port is taken" in line
    assert not result.stdout


# -- 5: the command's dependencies -----------------------------------------------------


def test_a_plain_install_brings_what_the_command_imports() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for needed in ("rich", "grpcio-health-checking", "grpcio-reflection"):
        assert needed in core, f"{needed} must be a core dependency: the command imports it"
    assert project["optional-dependencies"]["cli"] == [], "the cli extra stays, empty"


# -- 6: a server never reached ---------------------------------------------------------


@pytest.mark.parametrize("command", ["wait", "watch"])
def test_waits_give_up_on_a_server_never_reached(command: str) -> None:
    started = time.monotonic()
    result = _run(command, "operations/x", "--target", "127.0.0.1:1", "--rpc-timeout", "1")
    assert result.returncode == 4, result.stderr
    assert time.monotonic() - started < 15
    line = _one_line(result)
    assert "cannot reach the server" in line and "Connection refused" in line


def test_a_wait_on_a_reached_server_times_out_with_five(server: Server) -> None:
    name = _start(server, "--seconds", "30")
    result = _run("wait", name, "--target", server.target, "--timeout", "0.5")
    assert result.returncode == 5, result.stderr
    assert "is still running after --timeout 0.5s" in _one_line(result)


def test_waits_over_tls_say_why_the_handshake_failed(files: Files) -> None:
    tls = ["--tls-cert", files.server_cert, "--tls-key", files.server_key]
    plain = Server("--store", "memory", *tls)
    mutual = Server("--store", "memory", *tls, "--tls-ca", files.ca)
    try:
        untrusted = _run(
            "wait", "operations/x", "--target", plain.target, "--rpc-timeout", "1",
            "--tls-ca", files.other_ca,
        )  # fmt: skip
        assert untrusted.returncode == 4
        assert "not signed by --tls-ca" in _one_line(untrusted)
        no_identity = _run(
            "wait", "operations/x", "--target", mutual.target, "--rpc-timeout", "1",
            "--tls-ca", files.ca,
        )  # fmt: skip
        assert no_identity.returncode == 4
        assert "client certificate" in _one_line(no_identity)
        plaintext = _run("get", "operations/x", "--target", plain.target, "--rpc-timeout", "2")
        assert plaintext.returncode == 4
        assert "if the server uses TLS" in _one_line(plaintext)
    finally:
        plain.stop()
        mutual.stop()


# -- 7: list --limit -------------------------------------------------------------------


def test_list_limit_is_honoured_in_text(server: Server) -> None:
    for _ in range(3):
        _start(server, "--seconds", "0")
    result = _run("list", "--target", server.target, "--limit", "2")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2, result.stdout


# -- 8: decoding -----------------------------------------------------------------------


@pytest.fixture
async def struct_server() -> AsyncIterator[tuple[str, str, str]]:
    """A server without reflection: a Struct operation and one of a demo type."""
    async with lro_async.testing.serve() as served:
        manager = served.manager
        percent = struct_pb2.Struct(fields={"percent": struct_pb2.Value(number_value=50)})
        struct_op = await manager.create(parent="projects/p", metadata=percent)
        demo_op = await manager.create(
            parent="projects/p", metadata=demo_pb2.SleepMetadata(percent=7)
        )
        yield served.target, struct_op.name, demo_op.name


async def test_well_known_types_are_decoded_in_text_and_json(
    struct_server: tuple[str, str, str],
) -> None:
    target, name, _ = struct_server
    text = await _cli("get", name, "--target", target)
    assert text.returncode == 0, text.stderr
    assert 'metadata: google.protobuf.Struct {"percent": 50.0}' in text.stdout, text.stdout
    document = json.loads((await _cli("get", name, "--target", target, "--json")).stdout)
    assert document["metadata"] == {
        "@type": "type.googleapis.com/google.protobuf.Struct",
        "value": {"percent": 50.0},
    }


async def test_without_reflection_other_types_keep_their_raw_form(
    struct_server: tuple[str, str, str],
) -> None:
    target, _, name = struct_server
    text = await _cli("get", name, "--target", target)
    assert "(type.googleapis.com/lro_async.demo.v1.SleepMetadata, 2 bytes)" in text.stdout
    document = json.loads((await _cli("get", name, "--target", target, "--json")).stdout)
    assert document["metadata"]["value"] == "CAc=", "base64 of the bytes"


def test_other_services_types_are_decoded_through_reflection(server: Server) -> None:
    name = _start(server, "--seconds", "0", "--steps", "2")
    done = _run("wait", name, "--target", server.target, "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["metadata"]["percent"] == 100, document
    assert document["response"]["@type"].endswith("lro_async.demo.v1.SleepResponse")
    assert document["response"]["steps"] == 2
    text = _run("get", name, "--target", server.target)
    assert 'lro_async.demo.v1.SleepResponse {"slept": "0s", "steps": 2' in text.stdout


# -- 10 / 11: TLS files and stores on serve --------------------------------------------


def test_serve_with_a_key_of_another_certificate_is_one_line(files: Files) -> None:
    result = _run(
        "serve", "--port", "0", "--store", "memory",
        "--tls-cert", files.server_cert, "--tls-key", files.client_key,
    )  # fmt: skip
    assert result.returncode == 2
    assert "is not the private key of --tls-cert" in _one_line(result)


def test_a_plain_path_is_a_sqlite_store(tmp_path: Path) -> None:
    running = Server("--store", "./ops.db", cwd=tmp_path)
    try:
        name = _start(running, "--seconds", "0")
    finally:
        running.stop()
    assert (tmp_path / "ops.db").exists()
    again = Server("--store", str(tmp_path / "ops.db"))
    try:
        got = _run("get", name, "--target", again.target)
        assert got.returncode == 0 and "state:    done" in got.stdout, got.stderr
    finally:
        again.stop()


def test_a_store_in_a_missing_folder_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "ops.db"
    result = _run("serve", "--port", "0", "--store", str(path))
    assert result.returncode == 4
    assert str(path) in _one_line(result)


# -- 12: pipes and exit codes ----------------------------------------------------------


def test_watch_json_into_a_closed_pipe_stops_quietly(server: Server) -> None:
    name = _start(server, "--seconds", "20", "--steps", "40")
    watching = subprocess.Popen(
        [*CLI, "watch", name, "--target", server.target, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watching.stdout is not None and watching.stderr is not None
    first = json.loads(watching.stdout.readline())  # one object per line
    assert first["name"] == name
    watching.stdout.close()  # what `| head -1` does
    try:
        assert watching.wait(15) == 141
        assert watching.stderr.read() == ""
    finally:
        if watching.poll() is None:
            watching.kill()
            watching.wait(10)
        watching.stderr.close()


def test_get_of_a_failed_operation_exits_one(server: Server) -> None:
    name = _start(server, "--seconds", "0", "--fail", "9", "--fail-at", "0")
    assert _run("wait", name, "--target", server.target).returncode == 1
    got = _run("get", name, "--target", server.target)
    assert got.returncode == 1
    assert "failed: FAILED_PRECONDITION: told to fail" in _one_line(got)
    assert "state:    failed" in got.stdout


def test_wait_off_a_terminal_writes_nothing_to_stderr(server: Server) -> None:
    name = _start(server, "--seconds", "0.3", "--steps", "3")
    result = _run("wait", name, "--target", server.target)
    assert result.returncode == 0 and result.stderr == ""
    assert "state:    done" in result.stdout


def test_help_shows_defaults_exit_codes_and_no_backticks() -> None:
    for command in ([], ["serve"], ["list"], ["wait"], ["start", "sleep"]):
        shown = _run(*command, "--help")
        assert shown.returncode == 0, shown.stderr
        assert "`" not in shown.stdout, shown.stdout
        assert "141  stdout was closed early" in shown.stdout
    serve = _run("serve", "--help").stdout
    assert "(default: 50051)" in serve and "sqlite:///var/lib/ops.db is" in serve


def test_serve_stopped_by_a_signal_exits_zero(server: Server) -> None:
    server.process.terminate()
    assert server.process.wait(15) == 0


# -- 14: reflection v1 -----------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_serve_answers_reflection(server: Server, version: str) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        method = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="grpc.reflection.v1.ServerReflection"
            ),
        ]
        answers = [answer async for answer in method(iter(requests), timeout=10)]
    names = {service.name for service in answers[0].list_services_response.service}
    assert {
        "google.longrunning.Operations",
        "lro_async.demo.v1.Demo",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    assert answers[1].file_descriptor_response.file_descriptor_proto, answers[1]
