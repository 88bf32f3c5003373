"""The benchmark processes: servers and clients started by ``python -m benchmarks``.

A benchmark's orchestration runs in the ``python -m benchmarks`` process, which only
starts processes and reads their answers. Servers run as ``python -m benchmarks.server``
(:class:`ServerProcess`), clients as ``python -m benchmarks.<module> '<json params>'``
(:func:`run_client`, whose other end is :func:`client_main`), each in its own process so
that each side's CPU is its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any

from .settings import ROOT
from .telemetry import from_environment

__all__ = ["ServerProcess", "client_main", "run_client"]


def _environment() -> dict[str, str]:
    environment = dict(os.environ)
    path = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    return environment


class ServerProcess:
    """A ``python -m benchmarks.server`` process, started on entry and stopped on exit.

    :param kind: one of :data:`benchmarks.server.KINDS`.
    :param count_rpcs: count the Operations RPCs it receives (an interceptor, some cost).
    :param default_options: grpc's default server options instead of ``server_options()``.
    :param time_notices: time the server's part of each long-polled notice (``Stats``).
    """

    def __init__(
        self,
        kind: str,
        *,
        count_rpcs: bool = False,
        default_options: bool = False,
        time_notices: bool = False,
    ):
        self.kind = kind
        self.args = [sys.executable, "-m", "benchmarks.server", "--kind", kind]
        for flag, given in (
            ("--count-rpcs", count_rpcs),
            ("--default-options", default_options),
            ("--time-notices", time_notices),
        ):
            if given:
                self.args.append(flag)
        self._process: subprocess.Popen[str] | None = None
        self.target = ""

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> ServerProcess:
        process = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._process = process
        assert process.stdout is not None
        line = _read_line(process.stdout, timeout=60.0)
        if not line.startswith("READY "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"server {self.kind} did not start: {line!r}")
        self.target = f"127.0.0.1:{int(line.split()[1])}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


def _read_line(stream: IO[str], timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return "<timeout>"
    return stream.readline().strip()


def run_client(module: str, params: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.<module> '<params as JSON>'``; return the JSON it prints.

    :raises RuntimeError: the client failed or ran out of time (its stderr is in the error).
    """
    args = [sys.executable, "-m", f"benchmarks.{module}", json.dumps(params)]
    try:
        done = subprocess.run(
            args,
            cwd=ROOT,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"client {module} ran longer than {timeout:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"client {module} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def client_main(run: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
    """The ``__main__`` of a client module: params from argv[1], the result as JSON."""
    params = json.loads(sys.argv[1])
    from_environment()

    async def main() -> dict[str, Any]:
        return await run(params)

    result = asyncio.run(main())
    print(json.dumps(result), flush=True)
