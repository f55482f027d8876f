"""Bounds on what a client may send (limits.py): refused at the API edge, naming the field."""

from __future__ import annotations

import pytest

from tailhub.daemon.errors import InvalidRequest
from tailhub.daemon.limits import (
    DEFAULT_PAGE_SIZE,
    MAX_ARGV_ITEMS,
    MAX_ENV_VALUE_BYTES,
    MAX_JOB_IDS,
    MAX_NAME_BYTES,
    MAX_PAGE_SIZE,
    MAX_PUBLISH_BYTES,
    MAX_REQUEST_BYTES,
    MAX_TASK_BYTES,
    check_attach,
    check_ended_before,
    check_finish,
    check_job_ids,
    check_launch,
    check_publish,
    page_size,
    page_token,
)


def launch(**changes: object) -> None:
    request: dict[str, object] = {
        "run": "echo hi",
        "setup": "",
        "workdir": "",
        "envs": {},
        "environment": {},
    }
    check_launch("job", **{**request, **changes})  # type: ignore[arg-type]


def test_a_request_within_every_limit_is_taken() -> None:
    launch(envs={"LR": "0.1"}, environment={"BASH_FUNC_x%%": "() { :; }"}, workdir="/srv")
    check_attach("tail", argv=["tail", "-f", "/var/log/syslog"], transport_exit_codes=[255])
    check_attach("file", path="/var/log/app.log")
    check_publish(b"x" * MAX_PUBLISH_BYTES)
    check_finish(0, "done")
    check_job_ids(list(range(MAX_JOB_IDS)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"run": "a\0b"}, "run contains a NUL character"),
        ({"run": "x" * MAX_TASK_BYTES, "setup": "y"}, "run and setup are .* bytes together"),
        ({"envs": {"1BAD": "x"}}, "envs: '1BAD' is not a variable name"),
        ({"environment": {"A=B": "x"}}, "environment: 'A=B' cannot be a variable name"),
        ({"envs": {"BIG": "v" * (MAX_ENV_VALUE_BYTES + 1)}}, "envs.BIG is 131073 bytes"),
        ({"workdir": "/a\0b"}, "workdir contains a NUL character"),
        ({"backend": "x" * 65}, "is not a backend: local or skypilot"),
        ({"task_yaml": "y" * (MAX_TASK_BYTES + 1)}, "task_yaml is 1048577 bytes"),
    ],
)
def test_a_launch_beyond_a_limit_is_refused_naming_the_field(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        launch(**changes)


def test_a_name_is_measured_in_utf8_bytes_not_characters() -> None:
    check_attach("é" * (MAX_NAME_BYTES // 2), path="/x")
    with pytest.raises(InvalidRequest, match=f"name is {MAX_NAME_BYTES + 2} bytes"):
        check_attach("é" * (MAX_NAME_BYTES // 2 + 1), path="/x")


@pytest.mark.parametrize(
    ("argv", "codes", "message"),
    [
        (["x"] * (MAX_ARGV_ITEMS + 1), [], f"command.argv has {MAX_ARGV_ITEMS + 1} items"),
        (["ok", "bad\0"], [], r"command.argv\[1\] contains a NUL character"),
        (["a" * 200_000, "b" * 100_000], [], "command.argv is 300000 bytes"),
        (["ssh"], [256], "command.transport_exit_codes: 256 is not an exit code"),
    ],
)
def test_a_command_beyond_a_limit_is_refused(
    argv: list[str], codes: list[int], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        check_attach("cmd", argv=argv, transport_exit_codes=codes)


def test_publish_finish_and_id_lists_are_bounded() -> None:
    with pytest.raises(InvalidRequest, match="per Publish call \\(send it in several\\)"):
        check_publish(b"x" * (MAX_PUBLISH_BYTES + 1))
    with pytest.raises(InvalidRequest, match="exit_code 256 is not an exit code"):
        check_finish(256, "")
    with pytest.raises(InvalidRequest, match="job_ids names 10001 jobs"):
        check_job_ids(list(range(MAX_JOB_IDS + 1)))
    with pytest.raises(InvalidRequest, match="ended_before must be a finite time"):
        check_ended_before(float("nan"))


def test_every_request_within_the_limits_fits_the_transports_limit() -> None:
    assert MAX_REQUEST_BYTES > MAX_PUBLISH_BYTES
    assert MAX_REQUEST_BYTES > 2 * MAX_TASK_BYTES


def test_pages_of_the_job_list_are_bounded_and_tokens_are_only_ours() -> None:
    assert page_size(0) == DEFAULT_PAGE_SIZE
    assert page_size(10) == 10
    assert page_size(10**9) == MAX_PAGE_SIZE
    assert page_token("") is None
    assert page_token("42") == 42
    for forged in ("0", "-1", "abc", "9" * 21):
        with pytest.raises(InvalidRequest, match="page_token is not one this daemon handed out"):
            page_token(forged)
