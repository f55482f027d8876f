"""`make test` gets redis-server for the cluster tests (scripts/need-redis): installed with
apt-get when it is missing and we are root, else one line saying how. The machine's own
redis-server stays: a PATH without it stands for a machine that lacks it, and a stand-in
apt-get records what it was asked."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "need-redis"
HINT = "redis-server is missing (cluster tests need it): sudo apt-get install redis-server\n"


def _tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _machine(tmp_path: Path, uid: int, apt_lists: bool | None) -> Path:
    """A PATH directory holding only `id` (saying `uid`) and, unless `apt_lists` is None, an
    apt-get that installs redis-server into it (only after `update` when `apt_lists` is False)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(bin_dir, "id", f"echo {uid}")
    if apt_lists is not None:
        lists = tmp_path / "lists"
        if apt_lists:
            lists.touch()
        redis = bin_dir / "redis-server"
        _tool(
            bin_dir,
            "apt-get",
            f'echo "$*" >> {tmp_path}/apt-calls\n'
            f'if [ "$1" = update ]; then : > {lists}; exit 0; fi\n'
            f"[ -e {lists} ] || exit 100\n"
            f"printf '#!/bin/sh\\n' > {redis} && /bin/chmod 755 {redis}",
        )
    return bin_dir


def _run(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(SCRIPT)],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def _apt_calls(tmp_path: Path) -> list[str]:
    calls = tmp_path / "apt-calls"
    return calls.read_text().splitlines() if calls.exists() else []


def test_missing_redis_without_root_is_one_line_saying_how_to_install_it(tmp_path: Path) -> None:
    done = _run(_machine(tmp_path, uid=1000, apt_lists=True))
    assert done.returncode != 0
    assert done.stderr == HINT
    assert _apt_calls(tmp_path) == []


def test_missing_redis_without_apt_get_is_the_same_line(tmp_path: Path) -> None:
    done = _run(_machine(tmp_path, uid=0, apt_lists=None))
    assert done.returncode != 0
    assert done.stderr == HINT


def test_root_installs_it_with_apt_get_updating_the_lists_only_when_needed(
    tmp_path: Path,
) -> None:
    done = _run(_machine(tmp_path, uid=0, apt_lists=False))
    assert done.returncode == 0, done.stderr
    assert _apt_calls(tmp_path) == [
        "install -y -q redis-server",
        "update -q",
        "install -y -q redis-server",
    ]


def test_root_with_fresh_lists_installs_without_update(tmp_path: Path) -> None:
    done = _run(_machine(tmp_path, uid=0, apt_lists=True))
    assert done.returncode == 0, done.stderr
    assert _apt_calls(tmp_path) == ["install -y -q redis-server"]


def test_present_redis_needs_nothing(tmp_path: Path) -> None:
    bin_dir = _machine(tmp_path, uid=0, apt_lists=True)
    _tool(bin_dir, "redis-server", "exit 0")
    done = _run(bin_dir)
    assert (done.returncode, done.stderr) == (0, "")
    assert _apt_calls(tmp_path) == []
