"""The web view in a real browser (headless Chromium, selenium): a real daemon serving
`--http-listen`, a real login, and what a person sees on the page: a job's lines exactly and in
their colours, a resume after a daemon restart with no gap and no repeat, 20 tabs on one upstream,
a hostile log shown as text, a login code that works once, the "N new lines" button, search
highlights, the multi-job view's prefixes and the job list's live rows.

One browser for the module (starting one takes seconds); each test logs in to its daemon (a
session cookie is per host, not per port, so a test with a daemon of its own replaces it).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import check_daemon_log
from helpers import DaemonProcess, run_cli, wait_until
from markers import one_worker
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from web_helpers import (
    PAGE_TIMEOUT,
    base_of,
    chrome,
    computed,
    console_errors,
    log_data,
    login_url,
    page_lines,
    stream_state,
    wait,
    wait_for_offset,
    wait_for_state,
)

from harness.ports import free_port
from tailhub.client import Client

pytestmark = [pytest.mark.browser, one_worker("browser")]

SGR = re.compile(r"\x1b\[[0-9;]*m")

# app.css's palette (VS Code's terminal colours), as getComputedStyle says them.
RED = "rgb(205, 49, 49)"
GREEN = "rgb(13, 188, 121)"
CYAN = "rgb(17, 168, 205)"
YELLOW = "rgb(229, 229, 16)"

# A log and the lines a terminal shows for it: UTF-8 (a character split over two publishes
# below), a long line, `\r` progress bars, colours, an invalid byte, erase-in-line, a tab.
LOG_PIECES: list[tuple[bytes, list[str]]] = [
    (b"plain ascii line\n", ["plain ascii line"]),
    (
        "h\u00e9llo w\u00f6rld \u2014 \u00fcber \U0001f600\n".encode(),
        ["h\u00e9llo w\u00f6rld \u2014 \u00fcber \U0001f600"],
    ),
    (b"\x1b[31mred\x1b[0m and \x1b[1;32mbold green\x1b[0m\n", ["red and bold green"]),
    (
        b"\x1b[38;5;208morange256\x1b[0m \x1b[38;2;10;20;30;48;2;200;201;202mtruecolor\x1b[m\n",
        ["orange256 truecolor"],
    ),
    (b"downloading  10%\rdownloading  55%\rdownloading 100% done\n", ["downloading 100% done"]),
    (b"L" * 30000 + b"\n", ["L" * 30000]),
    (b"bad \xff byte\n", ["bad \ufffd byte"]),
    (b"old text here\r\x1b[Knew\n", ["new"]),
    (b"tab\there\r\n", ["tab\there"]),
    (b"\n", [""]),
]
EXPECTED = [line for _, lines in LOG_PIECES for line in lines]


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module's tests."""
    driver = chrome()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def web_daemon(request: pytest.FixtureRequest) -> Iterator[DaemonProcess]:
    """A daemon serving the web view on a loopback port, shared by the module's tests."""
    directory = Path(tempfile.mkdtemp(prefix="thw-", dir="/tmp"))
    port = free_port()
    daemon = DaemonProcess(directory / "home", args=["--http-listen", f"127.0.0.1:{port}"])
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        check_daemon_log(request, daemon.log_text(), f"the log of daemon {daemon.home}")
        shutil.rmtree(directory, ignore_errors=True)


def log_in(driver: WebDriver, daemon: DaemonProcess) -> str:
    """A fresh session on `daemon` (gRPC CreateWebLogin, as `tailhub web` asks for it); the
    web view's base URL."""
    with daemon.client() as client:
        url, _ = client.web_login()
    driver.delete_all_cookies()
    driver.get(url)
    base = base_of(url)
    wait(driver, lambda d: d.current_url == base + "/", "the job list after the login")
    return base


@pytest.fixture
def site(browser: WebDriver, web_daemon: DaemonProcess) -> Iterator[str]:
    """The browser logged in to the module's daemon; its base URL. No console error after."""
    base = log_in(browser, web_daemon)
    yield base
    assert console_errors(browser) == []


@pytest.fixture
def client(web_daemon: DaemonProcess) -> Iterator[Client]:
    with web_daemon.client() as made:
        yield made


def open_job(driver: WebDriver, base: str, job_id: int) -> None:
    driver.get(f"{base}/jobs/{job_id}")
    wait(driver, lambda d: stream_state(d) in ("live", "ended"), f"job {job_id}'s stream")


def test_a_job_page_shows_the_log_exactly_and_in_its_colours(
    browser: WebDriver, site: str, client: Client
) -> None:
    job = client.attach_push("exact")
    head = b"".join(raw for raw, _ in LOG_PIECES[:3])
    client.publish(job.id, head)
    open_job(browser, site, job.id)
    wait_for_offset(browser, len(head))
    # The rest live, one piece at a time; a character split over two publishes comes out
    # whole, and a progress bar's steps arrive as separate chunks.
    sent = len(head)
    pieces = [raw for raw, _ in LOG_PIECES[3:]]
    split = "\u00e9\u00e8\n".encode()
    pieces[1:1] = [
        b"step  1%",
        b"\rstep 50%",
        b"\rstep 99%\r",
        b"step done\n",
        split[:1],
        split[1:3],
        split[3:],
    ]
    expected = EXPECTED[:4] + ["step done", "\u00e9\u00e8"] + EXPECTED[4:]
    for piece in pieces:
        sent = client.publish(job.id, piece)
        wait_for_offset(browser, sent)
    client.finish(job.id, 0)
    wait_for_state(browser, "ended")
    assert page_lines(browser) == expected
    assert log_data(browser, "gaps") == "0"
    assert log_data(browser, "repeats") == "0"
    assert browser.find_element(By.ID, "ended").text.startswith("Ended: SUCCEEDED, exit code 0")
    assert browser.find_element(By.ID, "job-state").text == "SUCCEEDED"
    # Colours as a terminal shows them (the 16 named ones from the palette).
    log = "//div[@id='log']"
    assert computed(browser, f"{log}//span[text()='red']", "color") == RED
    assert computed(browser, f"{log}//span[text()='bold green']", "color") == GREEN
    assert computed(browser, f"{log}//span[text()='bold green']", "font-weight") == "700"
    assert computed(browser, f"{log}//span[text()='orange256']", "color") == "rgb(255, 135, 0)"
    truecolor = f"{log}//span[text()='truecolor']"
    assert computed(browser, truecolor, "color") == "rgb(10, 20, 30)"
    assert computed(browser, truecolor, "background-color") == "rgb(200, 201, 202)"
    # Uncoloured text is no span at all.
    assert browser.find_elements(By.XPATH, f"{log}//span[contains(., 'plain ascii')]") == []


def test_a_job_page_opens_at_the_last_1000_lines(
    browser: WebDriver, site: str, client: Client
) -> None:
    job = client.attach_push("long")
    text = b"".join(b"line %d\n" % n for n in range(1, 1501))
    client.publish(job.id, text)
    client.finish(job.id, 1, "it failed")
    open_job(browser, site, job.id)
    wait_for_state(browser, "ended")
    assert page_lines(browser) == [f"line {n}" for n in range(501, 1501)]
    start = text.index(b"line 501\n")
    assert log_data(browser, "start") == str(start)
    earlier = browser.find_element(By.ID, "earlier")
    assert earlier.is_displayed()
    assert f"{start} bytes into the log" in earlier.text
    assert browser.find_element(By.ID, "ended").text == "Ended: FAILED, exit code 1 (it failed)"
    raw = browser.find_element(By.ID, "download-raw").get_attribute("href")
    assert raw == f"{site}/api/jobs/{job.id}/raw"
    gzip = browser.find_element(By.ID, "download-gzip").get_attribute("href")
    assert gzip == f"{site}/api/jobs/{job.id}/raw?gzip=1"


def test_a_hostile_log_and_name_render_as_text(
    browser: WebDriver, site: str, client: Client
) -> None:
    name = "<img src=x onerror=window.pwned=1>"
    job = client.attach_push(name)
    hostile = (
        b"<script>window.pwned = 2; alert(2)</script>\n"
        b'<img src=x onerror="window.pwned=3"><b>bold?</b> &amp; &lt;\n'
        b"\x1b]8;;javascript:window.pwned=4\x1b\\click me\x1b]8;;\x1b\\ and "
        b"\x1b]8;;https://example.com/docs?a=1\x07docs\x1b]8;;\x07\n"
        b"\x1b]0;window title\x07\x1b[?1049h\x1b[2J\x1b[Hcursor moves\x1bP+q544e\x1b\\ dropped\n"
        b"\x1b]8;;data:text/html,<script>alert(5)</script>\x1b\\data link\x1b]8;;\x1b\\\n"
        b"unterminated \x1b]8;;https://x.test/never-closed\n"
        b"after\n"
    )
    client.publish(job.id, hostile)
    client.finish(job.id, 0)
    scripts = len(browser.find_elements(By.TAG_NAME, "script"))
    open_job(browser, site, job.id)
    wait_for_state(browser, "ended")
    assert page_lines(browser) == [
        "<script>window.pwned = 2; alert(2)</script>",
        '<img src=x onerror="window.pwned=3"><b>bold?</b> &amp; &lt;',
        "click me and docs",
        "cursor moves dropped",
        "data link",
        "unterminated ",
        "after",
    ]
    # Shown, never run: no alert, no script or image added, nothing set by one.
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text
    assert len(browser.find_elements(By.TAG_NAME, "script")) == scripts
    assert browser.find_elements(By.CSS_SELECTOR, "#log img, #log b, #log script") == []
    assert browser.execute_script("return window.pwned === undefined;")
    # The one http(s) link is a link, opened apart from the page; the others are text.
    links = browser.find_elements(By.CSS_SELECTOR, "#log a")
    assert [link.text for link in links] == ["docs"]
    assert links[0].get_attribute("href") == "https://example.com/docs?a=1"
    assert links[0].get_attribute("rel") == "noopener noreferrer"
    assert links[0].get_attribute("target") == "_blank"
    assert browser.find_element(By.ID, "job-name").text == name
    browser.get(f"{site}/")
    cell = f"//tr[@data-id='{job.id}']/td[contains(@class, 'name')]"
    wait(browser, lambda d: d.find_elements(By.XPATH, cell), "the job's row")
    assert browser.find_element(By.XPATH, cell).text == name
    assert browser.execute_script("return window.pwned === undefined;")


def test_a_login_code_works_once(browser: WebDriver, web_daemon: DaemonProcess, site: str) -> None:
    url = login_url(web_daemon.home)  # as a user gets it: `tailhub web`
    browser.delete_all_cookies()
    browser.get(url)
    wait(browser, lambda d: d.current_url == base_of(url) + "/", "the job list")
    wait(browser, lambda d: stream_state_of_list(d) == "live", "the live job list")
    # Another browser (no cookie) with the same link is refused, and so is every page.
    browser.delete_all_cookies()
    browser.get(url)
    assert "tailhub web" in browser.find_element(By.TAG_NAME, "body").text
    assert browser.find_elements(By.ID, "jobs") == []
    browser.get(base_of(url) + "/")
    assert "Run tailhub web to get a login link." in browser.find_element(By.TAG_NAME, "body").text
    # The refusals (403, 401) are the console's only errors.
    for error in console_errors(browser):
        assert " 403 " in error or " 401 " in error, error


def stream_state_of_list(driver: WebDriver) -> str:
    state: str = driver.execute_script(
        "return document.getElementById('list-state').dataset.state;"
    )
    return state


def test_scrolling_up_pauses_and_a_button_counts_the_new_lines(
    browser: WebDriver, site: str, client: Client
) -> None:
    job = client.attach_push("scroll")
    sent = client.publish(job.id, b"".join(b"first %d\n" % n for n in range(300)))
    open_job(browser, site, job.id)
    wait_for_offset(browser, sent)
    view = browser.find_element(By.ID, "log-view")
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(view), 0, -3000).perform()
    wait(browser, lambda d: view.get_attribute("data-following") == "false", "following paused")
    top = browser.execute_script("return arguments[0].scrollTop;", view)
    sent = client.publish(job.id, b"".join(b"new %d\n" % n for n in range(7)))
    wait_for_offset(browser, sent)
    button = browser.find_element(By.ID, "new-lines")
    wait(browser, lambda d: button.is_displayed(), "the new lines button")
    assert button.text == "7 new lines"
    assert browser.execute_script("return arguments[0].scrollTop;", view) == top
    button.click()
    wait(browser, lambda d: not button.is_displayed(), "the button gone")
    assert view.get_attribute("data-following") == "true"
    at_bottom = "const v = arguments[0]; return v.scrollHeight - v.scrollTop - v.clientHeight < 4;"
    assert browser.execute_script(at_bottom, view)
    sent = client.publish(job.id, b"one more\n")
    wait_for_offset(browser, sent)
    wait(browser, lambda d: d.execute_script(at_bottom, view), "the page following again")
    assert not button.is_displayed()
    client.finish(job.id, 0)


def test_search_highlights_the_matches_in_the_loaded_log(
    browser: WebDriver, site: str, client: Client
) -> None:
    job = client.attach_push("search")
    client.publish(
        job.id,
        b"a Needle here\nnothing\n\x1b[31mnee\x1b[0mdle across colours\nneedle needle\n",
    )
    open_job(browser, site, job.id)
    wait_for_offset(browser, client.get(job.id).log_size)
    before = page_lines(browser)
    browser.find_element(By.ID, "search").send_keys("needle")
    count = browser.find_element(By.ID, "search-count")
    wait(browser, lambda d: count.get_attribute("data-hits") == "4", "4 matches")
    marks = browser.find_elements(By.CSS_SELECTOR, "#log mark.hit")
    # The match across a colour change is marked in two pieces.
    assert [mark.text for mark in marks] == ["Needle", "nee", "dle", "needle", "needle"]
    assert "4 matches" in count.text
    assert page_lines(browser) == before
    # A line arriving later is searched too.
    client.publish(job.id, b"late needle\n")
    wait(browser, lambda d: count.get_attribute("data-hits") == "5", "5 matches")
    search = browser.find_element(By.ID, "search")
    search.clear()
    search.send_keys("x")
    wait(browser, lambda d: count.get_attribute("data-hits") == "0", "no match")
    assert browser.find_elements(By.CSS_SELECTOR, "#log mark") == []
    client.finish(job.id, 0)


def test_the_filter_field_shows_only_the_matching_lines(
    browser: WebDriver, site: str, client: Client
) -> None:
    job = client.attach_push("filter")
    client.publish(job.id, b"INFO start\nERROR disk full\nINFO retry\nERROR gave up\nDEBUG noise\n")
    open_job(browser, site, job.id)
    wait_for_offset(browser, client.get(job.id).log_size)
    browser.find_element(By.ID, "grep").send_keys("ERROR|INFO")
    browser.find_element(By.ID, "exclude").send_keys("retry")
    browser.find_element(By.ID, "apply-filter").click()
    wait(
        browser,
        lambda d: page_lines(d) == ["INFO start", "ERROR disk full", "ERROR gave up"],
        "the filtered lines",
    )
    assert "grep=ERROR%7CINFO" in browser.current_url
    client.publish(job.id, b"ERROR late\nINFO retry later\n")
    wait(browser, lambda d: page_lines(d)[-1:] == ["ERROR late"], "a late matching line")
    client.finish(job.id, 0)
    wait_for_state(browser, "ended")
    assert page_lines(browser) == ["INFO start", "ERROR disk full", "ERROR gave up", "ERROR late"]


def test_the_multi_job_view_prefixes_lines_as_the_cli_does(
    browser: WebDriver, web_daemon: DaemonProcess, site: str, client: Client
) -> None:
    train = client.attach_push("train")
    evaluate = client.attach_push("eval-long")
    browser.get(f"{site}/jobs?ids={train.id},{evaluate.id}")
    wait_for_state(browser, "live")
    client.publish(train.id, b"epoch 1\nepoch 2\n")
    wait(browser, lambda d: len(page_lines(d)) == 2, "train's lines")
    client.publish(evaluate.id, b"\x1b[32mscore\x1b[0m 0.9\nno newline")
    client.finish(train.id, 0)
    client.finish(evaluate.id, 2)
    wait_for_state(browser, "ended")
    width = len(f"eval-long-{evaluate.id}")
    train_prefix = f"train-{train.id}".ljust(width) + " | "
    eval_prefix = f"eval-long-{evaluate.id} | "
    expected = [
        f"{train_prefix}epoch 1",
        f"{train_prefix}epoch 2",
        f"{eval_prefix}score 0.9",
        f"{eval_prefix}no newline",
    ]
    assert page_lines(browser) == expected
    # The CLI prints the same lines, colours aside (jobs may interleave there).
    done = run_cli(web_daemon.home, "jobs", "logs", str(train.id), str(evaluate.id))
    cli_lines = [SGR.sub("", line) for line in done.stdout.decode().splitlines()]
    assert sorted(cli_lines) == sorted(expected)
    prefixes = "//div[@id='log']/div[@class='line']/span[contains(@class, 'prefix')]"
    spans = browser.find_elements(By.XPATH, prefixes)
    colours = [
        browser.execute_script("return getComputedStyle(arguments[0]).color;", s) for s in spans
    ]
    assert colours == [CYAN, CYAN, YELLOW, YELLOW]


def test_the_job_list_updates_live_and_filters(
    browser: WebDriver, site: str, client: Client
) -> None:
    browser.get(f"{site}/")
    wait(browser, lambda d: stream_state_of_list(d) == "live", "the live job list")
    first = client.attach_push("list-alpha")
    second = client.attach_push("list-beta")
    row = "//tr[@data-id='{}']"
    wait(browser, lambda d: d.find_elements(By.XPATH, row.format(second.id)), "the new rows")
    client.publish(first.id, b"x" * 2048)
    client.finish(first.id, 3)
    state = row.format(first.id) + "/td[contains(@class, 'state')]"
    wait(browser, lambda d: d.find_element(By.XPATH, state).text == "FAILED", "the job failed")
    cells = browser.find_element(By.XPATH, row.format(first.id)).find_elements(By.TAG_NAME, "td")
    assert [cell.text for cell in cells][:7] == [
        str(first.id),
        "list-alpha",
        "FAILED",
        "push",
        "2.0KiB",
        "0",
        "3",
    ]
    browser.find_element(By.ID, "filter-name").send_keys("list-b*")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) == 1, "one row")
    browser.find_element(By.ID, "filter-name").clear()
    browser.find_element(By.ID, "filter-name").send_keys("list-")
    select = browser.find_element(By.ID, "filter-state")
    select.find_element(By.CSS_SELECTOR, "option[value='FAILED']").click()
    wait(
        browser,
        lambda d: (
            [r.get_attribute("data-id") for r in d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")]
            == [str(first.id)]
        ),
        "the failed job only",
    )
    browser.find_element(By.XPATH, row.format(first.id) + "/td[contains(@class, 'name')]/a").click()
    wait(browser, lambda d: d.current_url == f"{site}/jobs/{first.id}", "the job's page")
    wait_for_state(browser, "ended")
    client.finish(second.id, 0)


def hide_behind_a_new_tab(driver: WebDriver, client: Client, job_ids: list[int]) -> str:
    """Opens a tab over the current one (now hidden), and waits until the hidden tab has let go
    of its stream (none of `job_ids` followed); the hidden tab's handle."""
    hidden = driver.current_window_handle
    driver.switch_to.new_window("tab")
    wait_until(
        lambda: all(client.get(job_id).subscribers == 0 for job_id in job_ids),
        PAGE_TIMEOUT,
        "the hidden tab to let go of its stream",
    )
    return hidden


def show_again(driver: WebDriver, hidden: str) -> None:
    driver.close()
    driver.switch_to.window(hidden)


def test_a_tab_shown_again_takes_up_its_log_exactly_where_it_was(
    browser: WebDriver, site: str, client: Client
) -> None:
    job = client.attach_push("hidden")
    head = b"".join(b"before %d\n" % n for n in range(100)) + b"half a "
    client.publish(job.id, head)
    open_job(browser, site, job.id)
    wait_for_offset(browser, len(head))
    hidden = hide_behind_a_new_tab(browser, client, [job.id])
    # More lines than a stream's tail (1000) come while nobody looks.
    rest = b"line\n" + b"".join(b"while hidden %d\n" % n for n in range(2500))
    sent = client.publish(job.id, rest)
    show_again(browser, hidden)
    wait_for_offset(browser, sent)
    client.finish(job.id, 0)
    wait_for_state(browser, "ended")
    assert page_lines(browser) == (head + rest).decode().splitlines()
    assert log_data(browser, "gaps") == log_data(browser, "repeats") == "0"
    assert browser.find_elements(By.CSS_SELECTOR, "#log .note") == []
    connections = browser.execute_script(
        "return document.getElementById('stream-state').dataset.connections;"
    )
    assert connections == "2"  # it did let go, and opened a new stream


def test_a_multi_job_tab_shown_again_takes_up_each_log_where_it_was(
    browser: WebDriver, site: str, client: Client
) -> None:
    early = client.attach_push("early")
    empty = client.attach_push("empty")  # nothing shown of it before the tab hides
    client.publish(early.id, b"".join(b"e %d\n" % n for n in range(10)))
    browser.get(f"{site}/jobs?ids={early.id},{empty.id}")
    wait(browser, lambda d: len(page_lines(d)) == 10, "early's lines")
    hidden = hide_behind_a_new_tab(browser, client, [early.id, empty.id])
    for job_id, name in ((early.id, b"e"), (empty.id, b"x")):
        client.publish(job_id, b"".join(b"%s %d\n" % (name, n) for n in range(10, 1510)))
        client.finish(job_id, 0)
    show_again(browser, hidden)
    wait_for_state(browser, "ended")
    lines = page_lines(browser)
    early_prefix = f"early-{early.id} | "
    empty_prefix = f"empty-{empty.id}".ljust(len(early_prefix) - 3) + " | "
    assert [line for line in lines if line.startswith(early_prefix)] == [
        f"{early_prefix}e {n}" for n in range(1510)
    ]
    assert [line for line in lines if line.startswith(empty_prefix)] == [
        f"{empty_prefix}x {n}" for n in range(10, 1510)
    ]
    assert len(lines) == 1510 + 1500


@pytest.mark.slow
def test_twenty_tabs_on_one_job_keep_one_upstream(
    browser: WebDriver, site: str, client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"first line\n")
    # A command's output: one upstream connection per run of the command.
    job = client.attach_command(["tail", "-n", "+1", "-f", str(path)], name="tabs")
    url = f"{site}/jobs/{job.id}"
    browser.get(url)
    first = browser.current_window_handle
    for _ in range(19):
        browser.switch_to.new_window("tab")
        browser.get(url)
        wait_for_offset(browser, 11)
    with path.open("ab") as log:
        log.write(b"second line\n")
    # Every tab shows the new line when looked at (a hidden tab lets go of its stream over
    # HTTP/1.1, at most 6 per host, and takes it up again from where it was).
    for handle in browser.window_handles:
        browser.switch_to.window(handle)
        wait_for_offset(browser, 23)
        assert page_lines(browser) == ["first line", "second line"]
        assert log_data(browser, "gaps") == log_data(browser, "repeats") == "0"
    assert client.get(job.id).upstream_connections == 1
    for handle in browser.window_handles:
        if handle != first:
            browser.switch_to.window(handle)
            browser.close()
    browser.switch_to.window(first)
    client.cancel([job.id])


@pytest.mark.slow
def test_a_daemon_restart_mid_stream_resumes_with_no_gap_or_repeat(
    browser: WebDriver, home: Path, request: pytest.FixtureRequest
) -> None:
    daemon = DaemonProcess(home, args=["--http-listen", f"127.0.0.1:{free_port()}"])
    daemon.start()
    try:
        base = log_in(browser, daemon)
        with daemon.client() as client:
            job = client.attach_push("restart")
            before = b"".join(b"before %d\n" % n for n in range(50)) + b"half a li"
            client.publish(job.id, before)
        open_job(browser, base, job.id)
        wait_for_offset(browser, len(before))
        browser.execute_script("window.samePage = true;")
        daemon.restart()
        with daemon.client() as client:
            after = b"ne\n" + b"".join(b"after %d\n" % n for n in range(50))
            client.publish(job.id, after)
            # The browser reconnects by itself, with Last-Event-ID.
            wait_for_offset(browser, len(before) + len(after))
            client.finish(job.id, 0)
        wait_for_state(browser, "ended")
        expected = (before + after).decode().splitlines()
        assert page_lines(browser) == expected
        assert log_data(browser, "gaps") == log_data(browser, "repeats") == "0"
        assert browser.execute_script("return window.samePage === true;")
        connections = browser.execute_script(
            "return document.getElementById('stream-state').dataset.connections;"
        )
        assert connections == "2"
        # Only the stream's own breaks while the daemon was away.
        for error in console_errors(browser):
            assert "/api/events/" in error, error
    finally:
        daemon.stop()
        check_daemon_log(request, daemon.log_text(), f"the log of daemon {daemon.home}")
