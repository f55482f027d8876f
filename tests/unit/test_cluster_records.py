"""Job records as JSON in Redis (cluster/records.py): what comes out of Redis is input like any
other, checked field by field; a record that does not pass is refused whole, with a reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tailhub.daemon.cluster.records import (
    HOME,
    MAX_RECORD_DEPTH,
    parse_record,
    record_from_json,
    record_to_json,
)
from tailhub.daemon.domain import (
    CommandSpec,
    FileSpec,
    JobRecord,
    JobState,
    LocalSpec,
    PushSpec,
    SkyPilotSpec,
    SourceSpec,
)
from tailhub.daemon.errors import BadRecord


def record(spec: SourceSpec, **fields: Any) -> JobRecord:
    return JobRecord(id=9, name="nine", spec=spec, submitted_at=1.7e9, **fields)


@pytest.mark.parametrize(
    "spec",
    [
        FileSpec("/var/log/app.log"),
        CommandSpec(("ssh", "far", "tail -f x"), transport_exit_codes=frozenset({255})),
        PushSpec(),
        SkyPilotSpec(task_yaml="run: train", name="t", envs=(("A", "1"),), managed_job_id=4),
    ],
    ids=lambda spec: spec.kind.value,
)
def test_a_record_another_daemon_wrote_is_read_back_as_it_was(spec: SourceSpec) -> None:
    written = record(spec, state=JobState.FAILED, exit_code=2, reason="boom", sealed=True)
    raw = json.dumps(record_to_json(written, "n1")).encode()
    assert record_from_json(9, parse_record(9, raw)) == (written, "n1")


def test_a_local_jobs_task_and_environment_never_reach_redis() -> None:
    spec = LocalSpec(
        run="train --key s3cret",
        setup="pip i",
        envs=(("TOKEN", "s3cret"),),
        environment=(("AWS_SECRET_ACCESS_KEY", "s3cret"),),
        workdir="/srv",
    )
    written = record_to_json(record(spec), "n0")
    assert "s3cret" not in json.dumps(written)
    read, home = record_from_json(9, written)
    assert home == "n0"
    assert read.spec == LocalSpec(run="", workdir="/srv")


def good() -> dict[str, Any]:
    return record_to_json(record(CommandSpec(("tail", "-f", "x"))), "n1")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": 10}, "it names job '10'"),
        ({"id": True}, "it names job 'True'"),
        ({"exit_code": 256}, "exit_code is not an integer from 0 to 255"),
        ({"state": "EXPLODED"}, "is not one"),
        ({"submitted_at": float("inf")}, "submitted_at is not a time"),
        ({"started_at": -1}, "started_at is not a time"),
        ({"sealed": "yes"}, "sealed is not true or false"),
        ({"name": "x" * 300}, "name is not a string of at most 256 bytes"),
        ({"source_state": []}, "source_state is not an object"),
        ({"source_state": {"pad": "x" * 70_000}}, "larger than a source's state is"),
        ({HOME: 7}, "home is not a node name"),
        ({"spec": "tail"}, "spec is not an object"),
        ({"spec": {"kind": "rsync"}}, "unknown source kind 'rsync'"),
        (
            {"spec": {"kind": "command", "argv": [], "shell": False, "transport_exit_codes": []}},
            "argv is empty",
        ),  # fmt: skip
        (
            {
                "spec": {
                    "kind": "command",
                    "argv": ["a\0"],
                    "shell": False,
                    "transport_exit_codes": [],
                }
            },
            "contains a NUL character",
        ),  # fmt: skip
        ({"spec": {"kind": "file", "path": 3}}, "path is not a string"),
        ({"upstream_connections": 2**60}, "upstream_connections is not an integer"),
    ],
)
def test_a_hostile_or_broken_record_is_refused_whole_naming_the_job_and_the_field(
    change: dict[str, Any], reason: str
) -> None:
    data = {**good(), **change}
    with pytest.raises(BadRecord, match=reason) as refused:
        record_from_json(9, data)
    assert str(refused.value).startswith("the record of job 9")


def test_a_record_missing_a_field_is_refused() -> None:
    data = good()
    del data["reason"]
    with pytest.raises(BadRecord, match="the record of job 9 is not one: KeyError"):
        record_from_json(9, data)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "is not JSON"),
        (b"\xff\xfe", "is not JSON"),
        (b"[1, 2]", "is not a JSON object"),
        (b'{"a":' * (MAX_RECORD_DEPTH + 2) + b"1" + b"}" * (MAX_RECORD_DEPTH + 2), "nested deeper"),
        (b"[" * 100_000 + b"]" * 100_000, "is not JSON|is not a JSON object|nested deeper"),
        (b" " * (4 * 1024 * 1024 + 1), "bytes: not one"),
    ],
)
def test_what_is_not_a_record_is_refused_before_it_is_read(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRecord, match=reason):
        parse_record(9, raw)
