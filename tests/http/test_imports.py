"""lro_async works without the http extra; the HTTP parts say what they need."""

from __future__ import annotations

import subprocess
import sys

WITHOUT_THE_EXTRA = """
import sys
import lro_async, lro_async.http
assert not {"httpx", "uvicorn"} & set(sys.modules), "imported without being used"
sys.modules["httpx"] = sys.modules["uvicorn"] = None  # as if not installed
lro_async.http.asgi_app(lro_async.OperationManager())  # needs no extra
for make in (
    lambda: lro_async.AsyncOperationsClient.from_url("http://127.0.0.1:1"),
    lambda: lro_async.http.running_http_server,
):
    try:
        make()
    except ImportError as exc:
        assert "pip install 'lro-async[http]'" in str(exc), exc
    else:
        raise SystemExit("no ImportError")
"""


def test_the_core_needs_no_extra_and_the_http_parts_say_what_to_install() -> None:
    subprocess.run([sys.executable, "-c", WITHOUT_THE_EXTRA], check=True, timeout=60)
