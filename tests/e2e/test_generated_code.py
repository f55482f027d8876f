from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "proto" / "tailhub" / "v1"


def test_committed_protobuf_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        [str(REPO / "scripts" / "gen-proto"), str(tmp_path)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    fresh_dir = tmp_path / "tailhub" / "v1"
    fresh = {path.name: path.read_bytes() for path in fresh_dir.glob("*_pb2*.py*")}
    committed = {path.name: path.read_bytes() for path in GENERATED.glob("*_pb2*.py*")}
    assert fresh, "scripts/gen-proto generated nothing"
    assert sorted(committed) == sorted(fresh), "generated files differ from the committed set"
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, f"stale generated code, run `make proto`: {stale}"
