"""stores.from_url: the store URL forms and plain paths, and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

import lro_async
from lro_async.stores import MemoryStore, PostgresStore, SQLiteStore, from_url


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current folder of the test's own, with a sub-folder ``data``."""
    folder = tmp_path / "cwd"
    (folder / "data").mkdir(parents=True)
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize(
    ("url", "path", "read_only"),
    [
        # plain paths
        ("ops.db", "ops.db", False),
        ("./ops.db", "./ops.db", False),
        ("data/ops.db", "data/ops.db", False),
        ("/var/lib/lro/ops.db", "/var/lib/lro/ops.db", False),
        ("./memroy", "./memroy", False),
        # sqlite: URLs, read as file: URLs
        ("sqlite:///var/lib/lro/ops.db", "/var/lib/lro/ops.db", False),
        ("sqlite:////var/lib/lro/ops.db", "/var/lib/lro/ops.db", False),
        ("sqlite:/var/lib/lro/ops.db", "/var/lib/lro/ops.db", False),
        ("sqlite:data/ops.db", "data/ops.db", False),
        ("sqlite:./data/ops.db", "./data/ops.db", False),
        ("sqlite:///ops.db", "ops.db", False),  # earlier versions' form, still relative
        ("sqlite:///lro_async.db", "lro_async.db", False),  # the command's old default
        ("sqlite:///var/lib/lro/ops.db?mode=ro", "/var/lib/lro/ops.db", True),
        ("sqlite:ops.db?mode=ro", "ops.db", True),
    ],
)
def test_sqlite_urls_and_paths_name_the_file_a_reader_expects(
    cwd: Path, url: str, path: str, read_only: bool
) -> None:
    store = from_url(url)
    assert isinstance(store, SQLiteStore)
    assert (store.path, store.read_only) == (path, read_only)


def test_a_home_path_is_expanded(cwd: Path) -> None:
    store = from_url("~/ops.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == str(Path.home() / "ops.db")


def test_memory_and_postgres_urls(cwd: Path) -> None:
    assert isinstance(from_url("memory"), MemoryStore)
    store = from_url("postgresql://lro@db.internal:5433/ops?schema=tenant_a&ssl=require")
    assert isinstance(store, PostgresStore)
    assert store.schema == "tenant_a"
    assert store.dsn == "postgresql://lro@db.internal:5433/ops?ssl=require"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memroy", "unknown store 'memroy': use memory, a file path such as ./ops.db"),
        ("mysql://db/ops", "unknown store 'mysql://db/ops': use memory, a file path"),
        ("sqlite:", "'sqlite:' names no file: write e.g. sqlite:///var/lib/lro/ops.db"),
        ("sqlite:///", "'sqlite:///' names no file"),
        (
            "sqlite://db.internal/ops.db",
            "'sqlite://db.internal/ops.db': a sqlite URL names no host",
        ),
        (
            "sqlite:///x.db?mode=rw",
            "'sqlite:///x.db?mode=rw': a sqlite URL takes no query but ?mode=ro",
        ),
    ],
)
def test_what_names_no_store_is_refused_in_one_line(cwd: Path, url: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^'|^unknown store") as caught:
        from_url(url)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_an_old_relative_url_is_refused_rather_than_opening_a_new_empty_file(cwd: Path) -> None:
    (cwd / "data" / "ops.db").touch()  # the database an earlier version made
    with pytest.raises(ValueError, match="names the absolute path") as caught:
        from_url("sqlite:///data/ops.db")
    assert str(caught.value) == (
        "'sqlite:///data/ops.db' names the absolute path /data/ops.db (sqlite:/// URLs are "
        "absolute, as file: URLs are), which does not exist, while data/ops.db exists in "
        "the current folder: write data/ops.db or sqlite:data/ops.db for that one, or "
        "/data/ops.db for the absolute one"
    )
    with pytest.raises(ValueError, match="which does not exist, nor does its folder, while data/"):
        from_url("sqlite:///data/new.db")  # no database yet, but the folder is here
    store = from_url("data/ops.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == "data/ops.db"


async def test_three_slashes_and_an_absolute_path_open_that_absolute_file(
    cwd: Path, tmp_path: Path
) -> None:
    # The reported surprise: sqlite:///tmp/x.db opened tmp/x.db under the current folder.
    target = tmp_path / "elsewhere" / "x.db"
    target.parent.mkdir()
    url = f"sqlite://{target}"
    assert url.startswith("sqlite:///") and not url.startswith("sqlite:////")
    async with lro_async.OperationManager(store=from_url(url)) as manager:
        op = await manager.create()
    assert target.exists()
    async with lro_async.OperationManager(store=from_url(str(target))) as manager:
        assert (await manager.get(op.name)).name == op.name  # the plain path: same file
