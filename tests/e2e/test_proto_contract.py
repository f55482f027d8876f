"""The proto contract: `buf breaking` holds v1 to its last release (proto-release/).

buf comes from $BUF (set by `make test`), else .tools/node_modules/.bin/buf.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO = Path("tailhub") / "v1" / "tailhub.proto"


def _buf() -> str:
    name = os.environ.get("BUF", ".tools/node_modules/.bin/buf")
    # A path is relative to the repository (make passes one); a bare name is looked up on PATH.
    buf = str(REPO / name) if "/" in name else shutil.which(name)
    missing = f"buf not found ({name}): run `make test`, it installs buf"
    assert buf, missing
    assert os.access(buf, os.X_OK), missing
    return buf


def _breaking(module: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_buf(), "breaking", str(module), "--against", "proto-release"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _changed_module(tmp_path: Path, change: Callable[[str], str]) -> Path:
    """A copy of the buf module in proto/, with `change` applied to the proto's text."""
    module = tmp_path / "proto"
    shutil.copytree(REPO / "proto", module, ignore=shutil.ignore_patterns("*.py*", "py.typed"))
    text = (module / PROTO).read_text()
    changed = change(text)
    assert changed != text, "the change did not apply: the test is out of date"
    (module / PROTO).write_text(changed)
    return module


def test_the_committed_proto_is_compatible_with_the_release() -> None:
    result = _breaking(REPO / "proto")
    assert result.returncode == 0, result.stdout + result.stderr


def test_removing_a_field_fails_naming_it(tmp_path: Path) -> None:
    module = _changed_module(tmp_path, lambda text: text.replace("  uint64 log_size = 8;\n", ""))
    result = _breaking(module)
    assert result.returncode != 0
    assert re.search(r'field "8" with name "log_size" on message "Job" was deleted', result.stdout)


def test_renumbering_a_field_fails_naming_it(tmp_path: Path) -> None:
    module = _changed_module(
        tmp_path, lambda text: text.replace("bytes data = 2;\n}", "bytes data = 3;\n}", 1)
    )
    result = _breaking(module)
    assert result.returncode != 0
    assert '"data" on message "Chunk"' in result.stdout, result.stdout


def test_changing_go_package_fails(tmp_path: Path) -> None:
    module = _changed_module(
        tmp_path,
        lambda text: re.sub(
            r'option go_package = "[^"]*";', 'option go_package = "x/v1;v1";', text
        ),
    )
    result = _breaking(module)
    assert result.returncode != 0
    assert 'File option "go_package" changed' in result.stdout


@pytest.mark.parametrize("where", ["message Job {\n", "message End {\n"])
def test_adding_a_field_is_compatible(tmp_path: Path, where: str) -> None:
    module = _changed_module(
        tmp_path, lambda text: text.replace(where, f"{where}  string added_later = 99;\n", 1)
    )
    result = _breaking(module)
    assert result.returncode == 0, result.stdout + result.stderr
