"""Launch keys (launch_keys.py, store.py): checked where they enter, kept with their job."""

from __future__ import annotations

from pathlib import Path

import pytest

from tailhub.daemon.domain import LaunchKey, LocalSpec
from tailhub.daemon.errors import InvalidRequest
from tailhub.daemon.launch_keys import launch_key
from tailhub.daemon.store import JobStore

KEY = "0123456789abcdef0123456789abcdef"


def test_a_key_is_scoped_to_its_caller_and_none_without_one() -> None:
    assert launch_key("alice", KEY) == LaunchKey("alice", KEY)
    assert launch_key(None, KEY) == LaunchKey("", KEY)  # the owner's
    assert launch_key("alice", "") is None


@pytest.mark.parametrize(
    "key", ["a" * 15, "a" * 65, "a" * 15 + " ", "a" * 16 + "\x00", "é" * 16, "a" * 16 + "/"]
)
def test_a_malformed_key_is_refused_without_being_echoed(key: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        launch_key("alice", key)
    assert key not in str(refused.value)


def test_a_key_is_kept_with_its_job_across_a_reopen_and_deleted_with_it(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    alices = LaunchKey("alice", KEY)
    record = store.create("job", LocalSpec(run="true"), owner="alice", key=alices)
    unkeyed = store.create("job", LocalSpec(run="true"), owner="alice")
    assert store.launched_with(alices) == record.id
    assert store.launched_with(LaunchKey("bob", KEY)) is None
    assert store.launched_with(LaunchKey("", KEY)) is None
    store.close()
    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        assert store.launched_with(alices) == record.id
        store.delete([unkeyed.id])
        assert store.launched_with(alices) == record.id
        store.delete([record.id])
        assert store.launched_with(alices) is None
        # The key is free again: a new launch with it makes (and keeps) a new job.
        again = store.create("job", LocalSpec(run="true"), owner="alice", key=alices)
        assert store.launched_with(alices) == again.id != record.id
    finally:
        store.close()
