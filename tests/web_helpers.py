"""The web view in a real browser: Debian's headless Chromium driven by selenium through its own
chromedriver (never one selenium-manager would download), a daemon serving `--http-listen`, a
real login through `tailhub web`, and what a test reads off the page.

scripts/web-screenshots uses the same setup.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import run_cli
from markers import CHROMEDRIVER, CHROMIUM
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

# Long enough for a loaded machine (two cores shared by many tests); a test that passes waits
# far less.
PAGE_TIMEOUT = 30.0
LOGIN_URL = re.compile(r"^http://127\.0\.0\.1:\d+/login\?code=[A-Za-z0-9_-]+$")


def chrome(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    """A headless Chromium of its own (a fresh profile: no cookie of another test)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespaces for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        # Tabs in the background keep running their timers and streams.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    # The console, for CSP violations and script errors.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def login_url(home: Path) -> str:
    """A one-time login link, as a user gets it: `tailhub web`."""
    done = run_cli(home, "web")
    assert done.returncode == 0, done.stderr
    url = done.stdout.decode().strip()
    assert LOGIN_URL.match(url), url
    return url


def base_of(url: str) -> str:
    """`http://127.0.0.1:PORT` of a login URL."""
    return url.split("/login", 1)[0]


def log_in(driver: WebDriver, home: Path) -> str:
    """Logs the browser in to the daemon serving `home`; returns the web view's base URL."""
    url = login_url(home)
    driver.get(url)
    # The code is traded for the cookie, then the browser is sent to the job list.
    wait(driver, lambda d: d.current_url == base_of(url) + "/", "the job list after login")
    return base_of(url)


def wait(
    driver: WebDriver,
    condition: Callable[[WebDriver], Any],
    what: str,
    timeout: float = PAGE_TIMEOUT,
) -> Any:
    """Polls `condition` until it is truthy (selenium's WebDriverWait); its value. An element
    not there yet, or replaced between finding and reading it (a live list redraws its rows),
    counts as not yet."""
    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.05,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(condition, f"timed out after {timeout:g}s waiting for {what}")


# The text of each line in #log (a job's page or the multi-job view), as the DOM holds it.
_LINES = "return Array.from(document.querySelectorAll('#log > div.line'), d => d.textContent);"


def page_lines(driver: WebDriver) -> list[str]:
    lines: list[str] = driver.execute_script(_LINES)
    return lines


def log_data(driver: WebDriver, name: str) -> str | None:
    """A `data-` attribute of #log: offset (the byte after the last chunk), start, gaps,
    repeats."""
    value: str | None = driver.execute_script(
        "return document.getElementById('log').dataset[arguments[0]] ?? null;", name
    )
    return value


def stream_state(driver: WebDriver) -> str:
    state: str = driver.execute_script(
        "return document.getElementById('stream-state').dataset.state;"
    )
    return state


def wait_for_offset(driver: WebDriver, offset: int) -> None:
    """Until the page has read the log up to byte `offset`."""
    wait(driver, lambda d: log_data(d, "offset") == str(offset), f"the page at byte {offset}")


def wait_for_state(driver: WebDriver, state: str) -> None:
    wait(driver, lambda d: stream_state(d) == state, f"the stream {state}")


def computed(driver: WebDriver, xpath: str, prop: str) -> str:
    """A CSS property of the element `xpath` finds, as the browser computed it."""
    element = driver.find_element("xpath", xpath)
    value: str = driver.execute_script(
        "return getComputedStyle(arguments[0]).getPropertyValue(arguments[1]);", element, prop
    )
    return value


def console_errors(driver: WebDriver) -> list[str]:
    """The console's errors since the last call (a CSP violation, a script's exception)."""
    assert isinstance(driver, webdriver.Chrome)
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry["message"] for entry in entries if entry["level"] == "SEVERE"]
