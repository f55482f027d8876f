"""The stall a lease race injects (faults.py, TAILHUB_CLUSTER_STALL), read and switched off."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tailhub.daemon import faults


def test_a_stall_is_read_with_or_without_its_stop_file() -> None:
    assert faults.stall_from({}) is None
    assert faults.stall_from({faults.STALL_ENV: "0.5:0.3"}) == faults.Stall(0.5, 0.3, None)
    assert faults.stall_from({faults.STALL_ENV: "1:2:/tmp/calm"}) == faults.Stall(
        1.0, 2.0, "/tmp/calm"
    )


@pytest.mark.parametrize(("value", "said"), [("often", "P:SECONDS"), ("2:1", "P in [0, 1]")])
def test_a_bad_stall_is_refused(value: str, said: str) -> None:
    with pytest.raises(ValueError, match=rf"^TAILHUB_CLUSTER_STALL: {re.escape(said)}"):
        faults.stall_from({faults.STALL_ENV: value})


def test_no_stall_once_its_stop_file_exists(tmp_path: Path) -> None:
    # A certain stall would start the freezing child, which the unit layer forbids.
    calm = tmp_path / "calm"
    calm.touch()
    asyncio.run(faults.stall(faults.Stall(1.0, 30.0, str(calm))))
