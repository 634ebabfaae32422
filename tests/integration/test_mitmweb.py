"""mitmweb with the dispatcher, looked at in a real headless Chromium.

A real `mitmweb -s addons/dispatcher.py` (web UI on loopback, password set explicitly, the
"Comment" column switched on by the addon) receives dispatched and default requests; the
test logs in through the UI and reads the flow list as a user sees it. Every run saves a
screenshot of it to the test's tmp_path; `MITMWEB_SCREENSHOT=docs/mitmweb-flows.png` also
writes it there (that is how the committed one is made).

Needs Debian's `chromium` and `chromium-driver`: skipped without them, failed on CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait

from sidecar_dispatcher.testing.loopback import free_port, wait_until_accepting

from .processes import BIN, REPOSITORY, Sidecar, Upstream

pytestmark = pytest.mark.timeout(90)

PASSWORD = "sidecar-test-password"
COMMENT_WIDTH = 360  # px; the column is 150 px by default, too narrow for a destination URL
VIEWPORT = (1400, 700)
WAIT = 15.0  # seconds, for every wait in the browser
# The UI re-renders while flows arrive: an element found a moment ago may be gone; look again.
RERENDERED = (StaleElementReferenceException,)
DISPATCHED_MARKER = "🔀"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass(frozen=True)
class Sent:
    """A request sent through mitmweb, and the rule that should take it (None: the default)."""

    method: str
    path: str
    rule: str | None
    body: bytes | None = None

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [("environment", self.rule)] if self.rule else []


REQUESTS = (
    Sent("GET", "/orders/1001", "dev"),
    Sent("POST", "/orders/1002", "qa", b'{"item": 2}'),
    Sent("GET", "/health/1003", None),
    Sent("PUT", "/orders/1004", "dev", b'{"item": 4}'),
    Sent("GET", "/catalog/1005?page=2", "qa"),
    Sent("DELETE", "/orders/1006", None),
)


@dataclass(frozen=True)
class MitmWeb:
    sidecar: Sidecar
    url: str  # of the web UI


@dataclass(frozen=True)
class Row:
    """One line of mitmweb's flow list, as displayed."""

    url: str
    method: str
    status: str
    comment: str
    marker: str

    @property
    def rule(self) -> str:
        return self.comment.partition(" → ")[0]


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    """Paths of the Chromium browser and its driver; skipped (failed on CI) when missing."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = [
            name for name, path in [("chromium", browser), ("chromedriver", driver)] if not path
        ]
        reason = (
            f"{' and '.join(missing)} not found: install the Debian packages chromium and "
            "chromium-driver (`make system-packages`) to check mitmweb in a browser"
        )
        if _on_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return browser, driver


@pytest.fixture(scope="module")
def mitmweb(
    config_file: Path, default_upstream: Upstream, dev_upstream: Upstream
) -> Iterator[MitmWeb]:
    """A real mitmweb with the dispatcher, after the REQUESTS went through it."""
    web_port = free_port()
    command = [str(BIN / "mitmweb"), "--web-host", "127.0.0.1", "--web-port", str(web_port)]
    options = ["web_open_browser=false", f"web_password={PASSWORD}"]
    sidecar = Sidecar(default_upstream.url, config=config_file, options=options, command=command)
    with sidecar:
        assert sidecar.process is not None
        wait_until_accepting(web_port, sidecar.process, "mitmweb's web UI")
        for sent in REQUESTS:
            response = sidecar.request(sent.method, sent.path, sent.headers, sent.body)
            assert response.status == 200, response.body
            assert response.json()["upstream"] == ("dev" if sent.rule == "dev" else "default")
        yield MitmWeb(sidecar, f"http://127.0.0.1:{web_port}/")


@pytest.fixture(scope="module")
def browser(
    chromium: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebDriver]:
    """Headless Chromium driven by the system chromedriver (Selenium Manager is never asked)."""
    browser_path, driver_path = chromium
    directory = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={directory / 'profile'}")
    service = Service(driver_path, log_output=str(directory / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)  # quits itself if it fails
    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        width, height = VIEWPORT
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        yield driver
    finally:
        driver.quit()  # closes Chromium and stops chromedriver


# --- driving the UI


def _load(driver: WebDriver, url: str) -> None:
    driver.get("about:blank")  # so that a URL differing only in its #fragment loads anew
    driver.get(url)


def _heading(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "h1").text


def _submit_password(driver: WebDriver, password: str) -> None:
    field = driver.find_element(By.NAME, "token")
    field.clear()
    field.send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()


def _log_out(driver: WebDriver) -> None:
    """Forget mitmweb's auth cookie (and every other)."""
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})


def _wait_for_flow_list(driver: WebDriver) -> None:
    WebDriverWait(driver, WAIT, ignored_exceptions=RERENDERED).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".flow-table thead"),
        "mitmweb's flow list did not appear",
    )


def _open_flow_list(driver: WebDriver, ui: MitmWeb) -> None:
    """Load the UI afresh (no filter), logging in through its form when it asks."""
    _load(driver, ui.url)
    if driver.find_elements(By.NAME, "token"):
        _submit_password(driver, PASSWORD)
    _wait_for_flow_list(driver)


_READ_ROWS = """
return Array.from(document.querySelectorAll('.flow-table tbody tr'))
  .filter(tr => tr.querySelector('td.col-path'))
  .map(tr => {
    const cell = name => tr.querySelector('td.col-' + name);
    const path = cell('path');
    return {
      url: Array.from(path.childNodes).filter(n => n.nodeType === Node.TEXT_NODE)
        .map(n => n.textContent).join('').trim(),
      marker: (path.querySelector('.marker') || {textContent: ''}).textContent.trim(),
      method: cell('method').textContent.trim(),
      status: cell('status').textContent.trim(),
      comment: cell('comment').textContent.trim(),
    };
  });
"""


def _rows(driver: WebDriver) -> list[Row]:
    found: list[dict[str, Any]] = driver.execute_script(_READ_ROWS)
    return [Row(**row) for row in found]


def _wait_for_rows(driver: WebDriver, sents: Sequence[Sent]) -> list[Row]:
    """The flow list once it shows exactly the flows of `sents`, all answered."""
    paths = sorted(sent.path.partition("?")[0] for sent in sents)

    def shown(d: WebDriver) -> list[Row] | Literal[False]:
        rows = _rows(d)
        found = sorted(path for row in rows for path in paths if path in row.url)
        answered = all(row.status for row in rows)
        return rows if found == paths and len(rows) == len(paths) and answered else False

    try:
        return WebDriverWait(driver, WAIT, ignored_exceptions=RERENDERED).until(shown)
    except TimeoutException:
        raise AssertionError(
            f"the flow list should show {paths}, it shows {_rows(driver)}"
        ) from None


def _row_for(rows: list[Row], sent: Sent) -> Row:
    path = sent.path.partition("?")[0]
    matching = [row for row in rows if path in row.url]
    assert len(matching) == 1, f"{sent} should be one row of {rows}"
    return matching[0]


def _search(driver: WebDriver, expression: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, "input[placeholder='Search']")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(expression)


def _expected_comment(sent: Sent, default: Upstream, dev: Upstream) -> str:
    """The config in conftest: dev goes to the dev upstream's /base, qa and the rest to default."""
    if sent.rule == "dev":
        return f"dev → {dev.url}/base"
    return f"{sent.rule or 'default'} → {default.url}"


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


# --- the tests


def test_ui_asks_for_the_password_and_refuses_a_wrong_one(
    browser: WebDriver, mitmweb: MitmWeb
) -> None:
    _log_out(browser)
    _load(browser, mitmweb.url)
    assert _heading(browser) == "403 Authentication Required"
    assert not browser.find_elements(By.CSS_SELECTOR, ".flow-table")

    _submit_password(browser, "not-the-password")
    WebDriverWait(browser, WAIT, ignored_exceptions=RERENDERED).until(
        lambda d: _heading(d) == "403 Invalid Password", "a wrong password was not refused"
    )
    assert not browser.find_elements(By.CSS_SELECTOR, ".flow-table")

    _submit_password(browser, PASSWORD)
    _wait_for_flow_list(browser)
    _wait_for_rows(browser, REQUESTS)


def test_token_query_parameter_logs_in(browser: WebDriver, mitmweb: MitmWeb) -> None:
    _log_out(browser)
    _load(browser, f"{mitmweb.url}?token={PASSWORD}")
    _wait_for_flow_list(browser)
    _wait_for_rows(browser, REQUESTS)


def test_flow_list_shows_each_flows_rule_comment_and_marks_dispatched_ones(
    browser: WebDriver,
    mitmweb: MitmWeb,
    default_upstream: Upstream,
    dev_upstream: Upstream,
    tmp_path: Path,
) -> None:
    _open_flow_list(browser, mitmweb)
    # What a user gets by dragging the Comment column wider (kept in the browser's storage).
    browser.execute_script(
        "localStorage.setItem('mitmweb-column-widths', JSON.stringify(arguments[0]))",
        {"comment": COMMENT_WIDTH},
    )
    _open_flow_list(browser, mitmweb)
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, ".flow-table thead th")]
    assert "Comment" in headers

    rows = _wait_for_rows(browser, REQUESTS)
    for sent in REQUESTS:
        row = _row_for(rows, sent)
        assert row.comment == _expected_comment(sent, default_upstream, dev_upstream)
        assert row.method == sent.method
        assert row.status == "200"
        assert row.marker == (DISPATCHED_MARKER if sent.rule else "")
    comment_cell = browser.find_element(By.CSS_SELECTOR, "td.col-comment")
    assert comment_cell.size["width"] >= COMMENT_WIDTH - 20  # shown whole, not "dev → http://…"

    screenshot = tmp_path / "mitmweb-flows.png"
    assert browser.save_screenshot(str(screenshot))
    assert _png_size(screenshot) == VIEWPORT
    if target := os.environ.get("MITMWEB_SCREENSHOT"):
        (REPOSITORY / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, REPOSITORY / target)


@pytest.mark.parametrize(
    ("expression", "rules"),
    [
        ("~comment dev", {"dev"}),
        ("~marked", {"dev", "qa"}),
        ("!~marked", {"default"}),
    ],
)
def test_search_filter_keeps_only_the_flows_it_names(
    browser: WebDriver, mitmweb: MitmWeb, expression: str, rules: set[str]
) -> None:
    _open_flow_list(browser, mitmweb)
    _wait_for_rows(browser, REQUESTS)
    _search(browser, expression)
    expected = [sent for sent in REQUESTS if (sent.rule or "default") in rules]
    rows = _wait_for_rows(browser, expected)
    assert {row.rule for row in rows} == rules
