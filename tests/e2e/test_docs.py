"""The README and docs/ stay true: the quick start runs, links resolve, and docs/cli.md
documents exactly the commands and options click has."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from tailhub.client.cli import cli
from tailhub.daemon.__main__ import main as tailhubd

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
CLI_PAGE = DOCS / "cli.md"
README_MAX_LINES = 250

# The README's blocks in these languages are not run, each for its reason. A block in any
# other language fails the test: a block is run or skipped on purpose, never by accident.
NOT_RUN = {
    "console": "commands not run here: installing tailhub, and contributors' make targets",
    "text": "output shown, not commands",
    "yaml": "a file's contents",
}
RUN = "sh"


# -- fenced blocks ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    language: str
    line: int  # of the opening fence, counted from 1
    text: str


def fenced_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    opened: tuple[str, int] | None = None
    body: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if opened is None:
            if line.startswith("```"):
                opened, body = (line[3:].strip(), number), []
        elif line.startswith("```"):
            blocks.append(Block(opened[0], opened[1], "\n".join(body) + "\n"))
            opened = None
        else:
            body.append(line)
    assert opened is None, f"{path.name}: the block opened on line {opened[1]} is never closed"
    return blocks


README_BLOCKS = fenced_blocks(README)


def test_readme_is_at_most_250_lines() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; move details to docs/ (at most {README_MAX_LINES})"
    )


def test_every_readme_block_is_run_or_of_a_language_never_run() -> None:
    """A ```sh block is run by the quick-start test; ```console (installs, make targets),
    ```text (output) and ```yaml (a task file) never are; any other block is a mistake."""
    assert any(block.language == RUN for block in README_BLOCKS)
    for block in README_BLOCKS:
        assert block.language == RUN or block.language in NOT_RUN, (
            f"README.md line {block.line}: a ```{block.language or '(no language)'} block is "
            f"neither run (```{RUN}) nor one of the languages never run "
            f"({', '.join(sorted(NOT_RUN))})"
        )


# -- the quick start, run ---------------------------------------------------------------------
def _lock_holders(lock: Path) -> list[int]:
    """Processes that hold the state directory's lock open: its daemon, if one runs."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == str(lock):
                        pids.append(int(entry.name))
                        break
    return pids


def _kill_jobs_left(home: Path, workdir: Path) -> None:
    """Kills the process group of any job still running in `workdir` (a failed run's)."""
    for pid_file in home.glob("runs/*/pid.*"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().split()[0])
            if Path(f"/proc/{pid}/cwd").resolve() == workdir.resolve():
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def quick_start(home: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A user's fresh machine: own HOME, own TAILHUB_HOME, the venv's commands first on PATH,
    and a copy of examples/ to run from. No daemon or job outlives the test."""
    root = home.parent
    workdir = root / "work"
    (root / "user").mkdir()
    shutil.copytree(REPO / "examples", workdir / "examples", ignore=shutil.ignore_patterns("node"))
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "HOME": str(root / "user"),
        "TAILHUB_HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for name in ("TAILHUB_SERVER", "TAILHUB_TOKEN", "TAILHUB_CA", "TAILHUB_BACKEND"):
        env.pop(name, None)
    try:
        yield workdir, env
    finally:
        tailhub = [str(bin_dir / "tailhub"), "--home", str(home)]
        if _lock_holders(home / "tailhubd.lock"):
            subprocess.run([*tailhub, "jobs", "cancel", "--all", "--yes"], env=env, timeout=60)
            subprocess.run([*tailhub, "daemon", "stop"], env=env, timeout=60)
        for pid in _lock_holders(home / "tailhubd.lock"):
            os.kill(pid, signal.SIGKILL)
        _kill_jobs_left(home, workdir)


def test_readme_quick_start_runs(quick_start: tuple[Path, dict[str, str]]) -> None:
    workdir, env = quick_start
    script = "".join(block.text for block in README_BLOCKS if block.language == RUN)
    assert "tailhub jobs launch" in script, "the README shows no launch to run"
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    said = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, f"the README's ```sh blocks failed:\n{said}"
    out, err = result.stdout, result.stderr
    # The synchronous launch and the follow wrote the hello job's log, twice, whole.
    assert out.count("hello from step 5 of 5\ndone\n") >= 2, said
    # Following several jobs: each line behind its job's name and id, and a summary.
    for n in (1, 2, 3):
        assert re.search(rf"^hello-{n}-\d+ \| done$", out, re.MULTILINE), said
    assert "tailhub: 3 succeeded" in err, said
    # The queue listed them, ended.
    for n in (1, 2, 3):
        assert re.search(rf"^\d+\s+hello-{n}\s+SUCCEEDED\s+0\s", out, re.MULTILINE), said
    # The cancelled job ended so, with its exit code.
    assert re.search(r"^job \d+ ended with exit code 103$", out, re.MULTILINE), said
    # The attached file's lines, both.
    assert "compiling\nlinking\n" in out, said
    # The daemon stopped: status said so, and no process holds the state directory's lock.
    assert "no daemon (exit 104)" in out, said
    # `tailhub doctor` found nothing failing (exit 0 under `set -e`) and started no daemon.
    assert re.search(r"^ok +cli: tailhub ", out, re.MULTILINE), said
    assert _lock_holders(Path(env["TAILHUB_HOME"]) / "tailhubd.lock") == [], said
    assert time.monotonic() - started < 120, "the quick start takes too long for a reader"


# -- links ------------------------------------------------------------------------------------
PAGES = [README, *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page."""
    anchors: set[str] = set()
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n" + "\n".join(broken)


# -- docs/cli.md against click ----------------------------------------------------------------
# Flags of other programs that docs/cli.md may name in passing (`sky jobs logs --tail 0`).
FOREIGN_FLAGS = {"--pdeathsig"}
HEADING = re.compile(r"^(#{2,3}) `?(tailhubd?(?: [a-z][a-z-]*)*)`?\s*$")
LONG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# An option entry: a list item that starts with the option's spellings in backticks.
ENTRY = re.compile(r"^- ((?:`[^`]+`(?:, | / |/| or )?)+)")


def _commands() -> dict[str, click.Command]:
    found: dict[str, click.Command] = {"tailhubd": tailhubd}

    def walk(command: click.Command, path: str) -> None:
        found[path] = command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                if not sub.hidden:
                    walk(sub, f"{path} {name}")

    walk(cli, "tailhub")
    return found


def _long_names(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            names |= {n for n in (*param.opts, *param.secondary_opts) if n.startswith("--")}
    return names - {"--help"}


def _sections() -> dict[str, list[str]]:
    """The lines under each command heading of docs/cli.md, up to the next ## or ### heading."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_block = False
    for line in CLI_PAGE.read_text().splitlines():
        if line.startswith("```"):
            in_block = not in_block
        if in_block:
            if current is not None:
                current.append(line)
            continue
        if re.match(r"^#{1,3} ", line):
            match = HEADING.match(line)
            current = None
            if match:
                name = match.group(2)
                assert name not in sections, f"docs/cli.md: two sections for `{name}`"
                current = sections[name] = []
            continue
        if current is not None:
            current.append(line)
    return sections


def test_cli_page_has_a_section_for_each_command_and_no_other() -> None:
    commands, sections = set(_commands()), set(_sections())
    missing, unknown = sorted(commands - sections), sorted(sections - commands)
    assert not missing, f"docs/cli.md has no `## name` or `### name` section for {missing}"
    assert not unknown, f"docs/cli.md documents commands click does not have: {unknown}"


def test_cli_page_lists_exactly_each_commands_options() -> None:
    sections = _sections()
    faults = []
    for path, command in _commands().items():
        if path not in sections:
            continue  # reported by the test above
        listed: set[str] = set()
        for line in sections[path]:
            entry = ENTRY.match(line)
            if entry:
                listed |= set(LONG.findall(entry.group(1)))
        have = _long_names(command)
        if have - listed:
            faults.append(f"{path}: not documented: {', '.join(sorted(have - listed))}")
        if listed - have:
            faults.append(f"{path}: documented but click has no {', '.join(sorted(listed - have))}")
    assert not faults, "docs/cli.md and click differ:\n" + "\n".join(faults)


def test_cli_page_names_only_options_that_exist() -> None:
    every = set().union(*(_long_names(c) for c in _commands().values())) | {"--help"}
    named = set(LONG.findall(CLI_PAGE.read_text()))
    assert not named - every - FOREIGN_FLAGS, (
        f"docs/cli.md names options no command has: {sorted(named - every - FOREIGN_FLAGS)}"
    )
