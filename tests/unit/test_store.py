"""Durable job records (store.py): what a daemon restart finds again, and what it refuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tailhub.daemon.domain import (
    CommandSpec,
    FileSpec,
    JobRecord,
    JobState,
    LocalSpec,
    PushSpec,
    SkyPilotSpec,
    SourceEvent,
)
from tailhub.daemon.errors import UnusableState
from tailhub.daemon.store import JobStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    made = JobStore(tmp_path / "jobs.sqlite3")
    yield made
    made.close()


def reopened(store: JobStore) -> JobStore:
    store.close()
    return JobStore(store.path)


SPECS = [
    FileSpec("/var/log/app.log"),
    CommandSpec(("ssh", "ctl", "tail -f x"), transport_exit_codes=frozenset({255})),
    PushSpec(),
    LocalSpec(run="echo hi", setup="true", workdir="/srv", envs=(("A", "1"),)),
    SkyPilotSpec(task_yaml="run: x", name="train", managed_job_id=12),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.kind.value)
def test_a_job_and_its_source_are_found_again_after_a_restart(
    store: JobStore, spec: object
) -> None:
    record = store.create("name", spec)  # type: ignore[arg-type]
    record.state = JobState.FAILED
    record.exit_code = 3
    record.reason = "exit 3"
    record.sealed = True
    record.source_state = {"inode": 42, "position": 1000}
    store.save(record)
    again = reopened(store)
    try:
        assert again.load_all() == [record]
    finally:
        again.close()


def test_ids_are_given_in_order_and_never_again_once_deleted(store: JobStore) -> None:
    first = store.create("a", PushSpec())
    second = store.create("b", PushSpec())
    store.delete([second.id])
    third = store.create("c", PushSpec())
    assert (first.id, second.id, third.id) == (1, 2, 3)
    assert [record.id for record in store.load_all()] == [1, 3]


def test_ids_stay_above_those_of_files_a_restored_older_database_does_not_know(
    store: JobStore,
) -> None:
    store.create("a", PushSpec())
    assert store.keep_ids_above(6)
    assert not store.keep_ids_above(3)
    assert store.create("b", PushSpec()).id == 7


def test_events_are_kept_in_order_and_go_with_their_job(store: JobStore) -> None:
    job = store.create("a", PushSpec())
    other = store.create("b", PushSpec())
    events = [SourceEvent(0, "connected", 1.0), SourceEvent(10, "reconnected", 2.0)]
    for event in events:
        store.add_event(job.id, event)
    store.add_event(other.id, SourceEvent(0, "x", 3.0))
    assert store.load_events()[job.id] == events
    store.delete([job.id])
    assert set(store.load_events()) == {other.id}


def test_jobs_made_with_a_token_remember_whose_they_are(store: JobStore) -> None:
    mine = store.create("a", PushSpec())
    theirs = store.create("b", PushSpec(), owner="ci")
    assert store.owners() == {theirs.id: "ci"}
    assert mine.id not in store.owners()


def test_a_database_knows_whether_it_is_new_and_keeps_its_identity(store: JobStore) -> None:
    identity, new = store.instance_id()
    assert new
    store.create("a", PushSpec())
    again = reopened(store)
    try:
        assert again.instance_id() == (identity, False)
    finally:
        again.close()


def test_a_damaged_database_is_refused_never_started_over(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(UnusableState, match="cannot be read .* move it aside together with"):
        JobStore(path)
    assert path.read_bytes() == b"this is not a database" * 100


def test_a_job_another_node_created_is_recorded_with_its_id(store: JobStore) -> None:
    record = JobRecord(id=40, name="remote", spec=PushSpec(), state=JobState.RUNNING)
    store.insert(record)
    store.insert(record)  # again: an update, not a second job
    assert store.load_all() == [record]
    assert store.job_count() == 1
