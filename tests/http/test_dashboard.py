"""The dashboard (``asgi_app(manager, dashboard=True)``), in a real headless Chromium.

The browser tests drive Debian's ``chromium`` through its ``chromium-driver`` with
selenium; they skip (with the reason) when either is missing, unless
``LRO_ASYNC_REQUIRE_BROWSER=1`` (as in ``.ci/run``) makes that a failure.
``LRO_ASYNC_UPDATE_SCREENSHOT=1`` also writes the screenshot to docs/dashboard.png.

The server runs on the test's event loop; selenium blocks, so each browser script runs in
a thread (``asyncio.to_thread``) and reaches the loop through ``run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from lro_async import (
    Access,
    InvalidArgument,
    OperationContext,
    OperationFailed,
    OperationManager,
    OperationNotFound,
)
from lro_async.cli import _parser
from lro_async.cli.serve import running_server
from lro_async.demo import demo_pb2

from ..waiting import until, wait_until
from .conftest import serve_http

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOCS_SCREENSHOT = pathlib.Path(__file__).parents[2] / "docs" / "dashboard.png"
WAIT = 15.0  # seconds any one condition may take in the browser

T = TypeVar("T")


def _browser_missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the test dependency group has it)"
    return None


@pytest.fixture
def browser(tmp_path: pathlib.Path) -> Iterator[Any]:
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("LRO_ASYNC_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LRO_ASYNC_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,720",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path given: selenium-manager never runs, nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


class Steps:
    """Operations whose progress moves one step (20 %) each time the test says so."""

    def __init__(self, manager: OperationManager, loop: asyncio.AbstractEventLoop) -> None:
        self.manager = manager
        self.loop = loop
        self.queues: dict[str, asyncio.Queue[str]] = {}

    async def start(self, parent: str = "") -> str:
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def work(ctx: OperationContext) -> demo_pb2.SleepResponse:
            for step in range(1, 6):
                if await queue.get() == "fail":
                    raise OperationFailed(9, "disk full (on purpose)")
                await ctx.set_metadata(demo_pb2.SleepMetadata(percent=step * 20, steps=5))
            return demo_pb2.SleepResponse(steps=5)

        op = await self.manager.start(
            work, parent=parent, metadata=demo_pb2.SleepMetadata(percent=0, steps=5)
        )
        self.queues[op.name] = queue
        return op.name

    async def advance(self, name: str, steps: int = 1) -> None:
        for _ in range(steps):
            self.queues[name].put_nowait("step")

    async def fail(self, name: str) -> None:
        self.queues[name].put_nowait("fail")

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """From the browser's thread: run *coroutine* on the server's loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT)


def _wait(driver: Any, condition: Callable[[Any], T], message: str) -> T:
    """Return ``condition(driver)`` once it is truthy (from the browser's thread)."""
    from selenium.common.exceptions import StaleElementReferenceException

    def look() -> T | None:
        try:
            return condition(driver)
        except StaleElementReferenceException:  # the page redrew the element meanwhile
            return None

    return wait_until(look, message, timeout=WAIT)


def _rows(driver: Any) -> list[str]:
    script = (
        "return [...document.querySelectorAll('#operations tbody tr')].map(r => r.dataset.name);"
    )
    names: list[str] = driver.execute_script(script)
    return names


def _row_field(driver: Any, name: str, field: str) -> str | None:
    script = (
        "const tr = [...document.querySelectorAll('#operations tbody tr')]"
        ".find(r => r.dataset.name === arguments[0]);"
        "return tr ? tr.dataset[arguments[1]] : null;"
    )
    value: str | None = driver.execute_script(script, name, field)
    return value


def _row(driver: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'#operations tbody tr[data-name="{name}"]')


def _apply_filter(driver: Any, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "filter")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "apply").click()


def _script_errors(driver: Any) -> list[str]:
    """The page's console errors, but for the refusals it shows (a 400, a 403)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")
    return [
        str(entry["message"])
        for entry in entries
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]


def _text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.ID, element_id)
    text: str = element.text if element.is_displayed() else ""
    return text


async def test_the_dashboard_shows_live_operations_and_cancels_one(
    browser: Any, tmp_path: pathlib.Path
) -> None:
    async with serve_http(dashboard=True) as served:
        steps = Steps(served.manager, asyncio.get_running_loop())
        started = [await steps.start() for _ in range(3)]
        bad_filter = "done = = true"
        with pytest.raises(InvalidArgument) as refused:
            await served.manager.list(None, filter=bad_filter)
        shot = tmp_path / "dashboard.png"
        # The page follows the collection watch where the app serves it (the :watch routes,
        # SSE), and polls where it does not.
        watched = getattr(served.app, "watches", None) is not None
        feed = "live (watch)" if watched else "polling every 1 s"
        await asyncio.to_thread(
            _live_and_cancel, browser, served.url, steps, started, bad_filter, refused.value, shot
        )
        assert browser.find_element("id", "live").text == feed
        assert shot.stat().st_size > 10_000
        if os.environ.get("LRO_ASYNC_UPDATE_SCREENSHOT") == "1":
            DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, DOCS_SCREENSHOT)


def _live_and_cancel(
    driver: Any,
    url: str,
    steps: Steps,
    started: list[str],
    bad_filter: str,
    refused: InvalidArgument,
    shot: pathlib.Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions

    first, second, third = started
    driver.get(url + "/")
    newest_first = started[::-1]
    _wait(driver, lambda d: _rows(d) == newest_first, f"rows newest first: {newest_first}")
    assert _row_field(driver, first, "state") == "RUNNING"
    assert _row_field(driver, first, "progress") == "0"

    # Progress moves in the page as the work reports it.
    steps.run(steps.advance(first, 2))
    _wait(driver, lambda d: _row_field(d, first, "progress") == "0.4", "the first at 40 %")
    bar = _row(driver, first).find_element(By.CSS_SELECTOR, ".bar > span")
    assert bar.value_of_css_property("width") != "0px"
    assert _row(driver, first).find_element(By.CSS_SELECTOR, ".pct").text == "40%"

    # A new operation appears at the top; finished ones change state.
    fourth = steps.run(steps.start())
    _wait(driver, lambda d: _rows(d)[:1] == [fourth], "the new operation on top")
    steps.run(steps.advance(first, 3))
    _wait(driver, lambda d: _row_field(d, first, "state") == "SUCCEEDED", "the first done")
    steps.run(steps.advance(third, 3))
    steps.run(steps.fail(third))
    _wait(driver, lambda d: _row_field(d, third, "state") == "FAILED", "the third failed")

    # Filters go to the server; a bad one shows the server's message.
    _apply_filter(driver, "done = true")
    _wait(driver, lambda d: _rows(d) == [third, first], "only the done ones")
    _apply_filter(driver, bad_filter)
    _wait(driver, lambda d: str(refused) in _text(d, "list-error"), f"the message {refused}")
    _apply_filter(driver, "done = false")
    _wait(driver, lambda d: _rows(d) == [fourth, second], "only the running ones")
    assert _text(driver, "list-error") == ""

    # The detail view: the operation as proto3 JSON.
    steps.run(steps.advance(second, 3))
    _row(driver, second).find_element(By.CSS_SELECTOR, "td.name a").click()
    _wait(driver, lambda d: '"percent": 60' in _text(d, "detail-json"), "the detail at 60 %")
    detail = json.loads(_text(driver, "detail-json"))
    assert detail["name"] == second
    assert detail["metadata"]["@type"].endswith("SleepMetadata")

    # Cancel with a click: the row and the detail end CANCELLED.
    _row(driver, second).find_element(By.CSS_SELECTOR, "button.cancel").click()
    _wait(driver, lambda d: second not in _rows(d), "the cancelled one leaves 'done = false'")
    _apply_filter(driver, "")
    _wait(driver, lambda d: _row_field(d, second, "state") == "CANCELLED", "the second cancelled")
    _wait(driver, lambda d: '"code": 1' in _text(d, "detail-json"), "the detail's error code 1")
    assert steps.run(steps.manager.get(second)).error.code == 1
    assert "Cancel requested" in _text(driver, "message")

    # Delete asks first, then the operation is gone.
    _row(driver, fourth).find_element(By.CSS_SELECTOR, "button.delete").click()
    _wait(driver, expected_conditions.alert_is_present(), "the delete confirmation")
    driver.switch_to.alert.accept()
    _wait(driver, lambda d: fourth not in _rows(d), "the deleted one gone")
    with pytest.raises(OperationNotFound):
        steps.run(steps.manager.get(fourth))

    # For the screenshot: a mix of states, with one running at 40 % selected.
    fifth = steps.run(steps.start())
    steps.run(steps.advance(fifth, 2))
    sixth = steps.run(steps.start())
    steps.run(steps.advance(sixth, 4))
    _wait(driver, lambda d: _row_field(d, fifth, "progress") == "0.4", "the fifth at 40 %")
    _wait(driver, lambda d: _row_field(d, sixth, "progress") == "0.8", "the sixth at 80 %")
    _row(driver, fifth).find_element(By.CSS_SELECTOR, "td.name a").click()
    _wait(driver, lambda d: fifth in _text(d, "detail-json"), "the fifth's detail")
    driver.save_screenshot(str(shot))
    assert _script_errors(driver) == []


async def test_a_caller_who_may_not_cancel_sees_the_refusal(browser: Any) -> None:
    def no_cancel(access: Access) -> bool:
        return access.rpc != "CancelOperation"

    async with serve_http(dashboard=True, authorize=no_cancel) as served:
        steps = Steps(served.manager, asyncio.get_running_loop())
        name = await steps.start()
        await asyncio.to_thread(_refused, browser, served.url, name)
        assert not (await served.manager.get(name)).done


def _refused(driver: Any, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    _wait(driver, lambda d: _rows(d) == [name], "the one operation listed")
    _row(driver, name).find_element(By.CSS_SELECTOR, "button.cancel").click()
    expected = f"PERMISSION_DENIED: permission denied: CancelOperation on {name!r}"
    _wait(driver, lambda d: expected in _text(d, "message"), f"the refusal {expected!r}")
    assert _row_field(driver, name, "state") == "RUNNING"
    assert _script_errors(driver) == []


async def test_the_page_pages_newest_first(browser: Any) -> None:
    async with serve_http(dashboard=True) as served:
        names = [(await served.manager.create(parent="projects/p")).name for _ in range(12)]
        await asyncio.to_thread(_pages, browser, served.url, names)


def _pages(driver: Any, url: str, names: list[str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(url + "/")
    _wait(driver, lambda d: len(_rows(d)) == 12, "the twelve operations")
    parent = driver.find_element(By.ID, "parent")
    parent.send_keys("projects/p")
    Select(driver.find_element(By.ID, "page-size")).select_by_visible_text("10")
    _wait(driver, lambda d: _rows(d) == names[:1:-1], "the newest ten")
    assert _text(driver, "page-info") == "1\u201310 of 12"
    assert not driver.find_element(By.ID, "prev").is_enabled()
    driver.find_element(By.ID, "next").click()
    _wait(driver, lambda d: _rows(d) == names[1::-1], "the oldest two")
    assert _text(driver, "page-info") == "11\u201312 of 12"
    assert not driver.find_element(By.ID, "next").is_enabled()
    driver.find_element(By.ID, "prev").click()
    _wait(driver, lambda d: _rows(d) == names[:1:-1], "the newest ten again")
    parent.clear()
    parent.send_keys("projects/q")
    driver.find_element(By.ID, "apply").click()
    _wait(driver, lambda d: _rows(d) == [] and _text(d, "empty") != "", "none under projects/q")
    assert _script_errors(driver) == []


# -- the routes, without a browser -----------------------------------------------------


async def test_the_page_and_its_files_are_served_only_when_enabled() -> None:
    async with serve_http(dashboard=True) as served:
        page = await served.http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<meta name="lro-api-prefix" content="v1">' in page.text
        script = await served.http.get("/dashboard/app.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert "pollingFeed" in script.text
        style = await served.http.get("/dashboard/style.css")
        assert style.headers["content-type"].startswith("text/css")
        assert (await served.http.get("/v1/operations")).json() == {"operations": []}
    async with serve_http() as served:
        for path in ("/", "/dashboard/app.js", "/dashboard/api/operations"):
            answer = await served.http.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["error"]["details"][0]["reason"] == "NO_ROUTE"


async def test_the_list_is_newest_first_with_progress_and_pages() -> None:
    async with serve_http(dashboard=True) as served:
        steps = Steps(served.manager, asyncio.get_running_loop())
        names = [await steps.start(parent="projects/p") for _ in range(5)]
        other = await served.manager.create()
        await steps.advance(names[0], 3)

        async def three_steps_made() -> bool:
            metadata = demo_pb2.SleepMetadata()
            assert (await served.manager.get(names[0])).metadata.Unpack(metadata)
            return metadata.percent == 60

        await until(three_steps_made, "the first operation never reached 60 %")
        first = (
            await served.http.get(
                "/dashboard/api/operations", params={"parent": "projects/p", "pageSize": "3"}
            )
        ).json()
        assert [item["operation"]["name"] for item in first["operations"]] == names[:1:-1]
        assert [item["progress"] for item in first["operations"]] == [0.0, 0.0, 0.0]
        assert (first["matched"], first["truncated"], first["nextPage"]) == (5, False, "3")
        rest = (
            await served.http.get(
                "/dashboard/api/operations",
                params={"parent": "projects/p", "pageSize": "3", "page": "3"},
            )
        ).json()
        assert [item["operation"]["name"] for item in rest["operations"]] == names[1::-1]
        assert [item["progress"] for item in rest["operations"]] == [0.0, pytest.approx(0.6)]
        assert rest["nextPage"] == ""
        every = (await served.http.get("/dashboard/api/operations", params={"parent": "-"})).json()
        assert every["operations"][0]["operation"]["name"] == other.name
        assert every["operations"][0]["progress"] is None  # no metadata: no bar


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"filter": "done = = true"}, "filter"),
        ({"pageSize": "0"}, "pageSize must be 1-1000, not 0"),
        ({"page": "-1"}, "page must be a non-negative integer, not '-1'"),
        ({"parent": "/bad"}, "parent"),
        ({"order": "x"}, "unknown query parameter 'order'"),
    ],
)
async def test_a_bad_list_request_gets_the_servers_message(
    params: dict[str, str], message: str
) -> None:
    async with serve_http(dashboard=True) as served:
        answer = await served.http.get("/dashboard/api/operations", params=params)
        assert answer.status_code == 400
        assert message in answer.json()["error"]["message"]


async def test_the_list_goes_through_the_authorizer() -> None:
    seen: list[tuple[str, str]] = []

    def only_projects_p(access: Access) -> bool:
        seen.append((access.rpc, access.resource))
        return access.resource == "projects/p"

    async with serve_http(dashboard=True, authorize=only_projects_p) as served:
        allowed = await served.http.get("/dashboard/api/operations?parent=projects/p")
        assert allowed.status_code == 200
        denied = await served.http.get("/dashboard/api/operations")
        assert denied.status_code == 403
        assert denied.json()["error"]["message"] == "permission denied: ListOperations on ''"
    assert seen == [("ListOperations", "projects/p"), ("ListOperations", "")]


def test_the_files_ship_inside_the_package() -> None:
    from importlib import resources

    folder = resources.files("lro_async.http") / "static"
    assert {p.name for p in folder.iterdir()} >= {"index.html", "app.js", "style.css"}


# -- the command -----------------------------------------------------------------------


async def test_serve_dashboard_serves_the_page_beside_the_api() -> None:
    assert _parser().parse_args(["serve"]).dashboard is False
    assert _parser().parse_args(["serve", "--http-port", "0", "--dashboard"]).dashboard
    async with (
        running_server("127.0.0.1", 0, "memory", grace=1.0, http_port=0, dashboard=True) as on,
        running_server("127.0.0.1", 0, "memory", grace=1.0, http_port=0) as off,
        httpx.AsyncClient() as http,
    ):
        op = await on.manager.create()
        page = await http.get(f"http://{on.http_target}/")
        assert page.status_code == 200 and "dashboard/app.js" in page.text
        listed = await http.get(f"http://{on.http_target}/dashboard/api/operations")
        assert [item["operation"]["name"] for item in listed.json()["operations"]] == [op.name]
        assert (await http.get(f"http://{off.http_target}/")).status_code == 404


def test_dashboard_without_an_http_port_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lro_async", "serve", "--port", "0", "--dashboard"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "lro-async serve: --dashboard needs --http-port (the page is served over HTTP)"
    ]
