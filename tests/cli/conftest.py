"""Fixtures of the command's tests."""

from __future__ import annotations

import pytest

from .pki import Files, write_files


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """TLS files written once for the session."""
    return write_files(tmp_path_factory.mktemp("tls"))
