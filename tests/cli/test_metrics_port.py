"""``serve --metrics-port`` without the otel extra, and lro_async without OpenTelemetry at all.

The extra is hidden from a subprocess by packages of the same names, first on its path,
whose import fails as a missing package's would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)


def _hidden(tmp_path: Path) -> dict[str, str]:
    for package in ("opentelemetry", "prometheus_client"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(
            f"raise ModuleNotFoundError('No module named {package}')\n"
        )
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


def test_metrics_port_without_the_extra_is_one_line_and_exit_two(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lro_async", "serve", "--port", "0", "--metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=_hidden(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        "lro-async serve: --metrics-port needs the otel extra: pip install 'lro-async[otel]'\n"
    )
    assert "serving on" not in result.stdout
    assert not (tmp_path / "lro_async.db").exists()  # it changed nothing


def test_without_opentelemetry_operations_are_served_and_awaited(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        import lro_async, lro_async.testing
        from lro_async import telemetry

        async def main() -> None:
            async with lro_async.testing.serve() as served:
                op = await served.manager.create()
                client = lro_async.AsyncOperationsClient(served.channel)
                waiting = asyncio.ensure_future(client.operation(op.name).result())
                await served.manager.complete(op.name)
                await waiting
                await client.aclose()
                assert served.manager.telemetry is None
            assert telemetry.current() is None
            assert not [m for m in sys.modules if m.startswith("opentelemetry.")]
            print("ok")

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=_hidden(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
