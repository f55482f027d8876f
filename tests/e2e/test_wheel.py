"""What ships: the sdist and wheel built from a clean copy of the tree, installed into a new venv
outside it, with no source on sys.path, work as a user gets them.

The wheel is built the way a release is (`python -m build`: the sdist first, the wheel from the
sdist), with the build tools from the lock. The venv gets the runtime dependencies from
requirements/runtime.lock (hash-checked, the versions the suite runs against; installed with
uv from the lock, ten times faster than pip here), then the wheel itself with the venv's own
pip, as a user installs it; `pip check` proves the wheel's own requirements are met by them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from markers import one_worker

pytestmark = one_worker("wheel")

ROOT = Path(__file__).resolve().parents[2]
# Where each part of the `tailhub` import root lives in the source tree.
PARTS = ("daemon", "client", "proto")
HELLO_OUTPUT = (
    b"setting up job 1\n"
    + b"".join(b"hello from step %d of 5\n" % step for step in range(1, 6))
    + b"done\n"
)


def source_modules() -> set[str]:
    """Every module of the source tree, as its import name."""
    modules = set()
    for part in PARTS:
        for path in (ROOT / part / "tailhub").rglob("*.py"):
            name = path.relative_to(ROOT / part).with_suffix("").as_posix().replace("/", ".")
            modules.add(name.removesuffix(".__init__"))
    return modules


def clean_copy(destination: Path) -> Path:
    """The files git knows of (tracked, or new and not ignored): no venv, cache or build."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet committed is left out
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def run(*argv: str | Path, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run([os.fspath(a) for a in argv], capture_output=True, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, (
        f"{argv} exited {result.returncode}:\n{result.stdout.decode()}\n{result.stderr.decode()}"
    )
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built from a clean copy of the tree."""
    source = clean_copy(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source)
    print(f"built sdist and wheel in {time.monotonic() - started:.1f} s")
    return out


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv, outside the tree, holding the wheel and its locked dependencies."""
    venv = tmp_path_factory.mktemp("venv")
    started = time.monotonic()
    run(sys.executable, "-m", "venv", "--clear", venv)
    pip = (venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "-q")
    lock = ROOT / "requirements" / "runtime.lock"
    uv = Path(sys.executable).parent / "uv"
    run(
        uv,
        "pip",
        "install",
        "-q",
        "--python",
        venv / "bin" / "python",
        "--require-hashes",
        "-r",
        lock,
    )
    (wheel,) = dist.glob("*.whl")
    run(*pip, "install", "--no-deps", wheel)
    run(*pip, "check")
    print(f"installed into a new venv in {time.monotonic() - started:.1f} s")
    return venv


def user_env(venv: Path, home: Path) -> dict[str, str]:
    """A user's environment: the venv's bin first, nothing of the source tree anywhere."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "TAILHUB_", "VIRTUAL_ENV", "PYTEST"))
    }
    paths = [p for p in env.get("PATH", "").split(":") if p and not p.startswith(str(ROOT))]
    env["PATH"] = ":".join([str(venv / "bin"), *paths])
    env["TAILHUB_HOME"] = str(home)
    return env


def test_sdist_carries_the_proto_and_the_project_files(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for expected in (
        "proto/tailhub/v1/tailhub.proto",
        "proto/buf.yaml",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "pyproject.toml",
    ):
        assert expected in names, f"{expected} is missing from {sdist.name}"


def test_wheel_holds_every_module_of_the_source_tree_and_no_top_level_daemon(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    shipped = {
        name.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        for name in names
        if name.endswith(".py")
    }
    missing = source_modules() - shipped
    assert not missing, f"the wheel lacks {sorted(missing)}"
    top_level = {name.split("/", 1)[0] for name in names}
    top_level = {name for name in top_level if not name.endswith(".dist-info")}
    assert top_level == {"tailhub"}, f"the wheel installs {sorted(top_level)} at the top level"
    assert "tailhub/v1/tailhub.proto" in names
    assert "tailhub/daemon/py.typed" in names


def test_installed_wheel_imports_every_module_from_the_venv(
    installed: Path, tmp_path: Path
) -> None:
    # `__main__` modules run their command when imported; each is run with --help below.
    modules = sorted(m for m in source_modules() if not m.endswith(".__main__"))
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(installed)!r}), (name, module.__file__)\n"
        "print(len(sys.modules))\n"
    )
    python = installed / "bin" / "python"
    run(python, "-I", "-c", script, cwd=tmp_path, env=user_env(installed, tmp_path / "home"))


def test_installed_commands_answer_help_and_version(installed: Path, tmp_path: Path) -> None:
    env = user_env(installed, tmp_path / "home")
    daemon_help = run(installed / "bin" / "tailhubd", "--help", cwd=tmp_path, env=env)
    assert b"--home" in daemon_help.stdout
    version = run(installed / "bin" / "tailhub", "--version", cwd=tmp_path, env=env)
    assert b"0.2.0" in version.stdout
    # `--version` never starts a daemon.
    assert not (tmp_path / "home" / "tailhubd.pid").exists()
    for package in ("tailhub.client", "tailhub.daemon"):
        help_text = run(
            installed / "bin" / "python", "-m", package, "--help", cwd=tmp_path, env=env
        )
        assert b"Usage" in help_text.stdout


def test_installed_cli_autostarts_its_daemon_and_follows_a_launch_byte_exact(
    installed: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = user_env(installed, home)
    shutil.copy(ROOT / "examples" / "hello.yaml", tmp_path / "hello.yaml")
    tailhub = installed / "bin" / "tailhub"
    try:
        launch = subprocess.run(
            [tailhub, "jobs", "launch", "hello.yaml"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert launch.returncode == 0, launch.stderr.decode()
        assert launch.stdout == HELLO_OUTPUT
        # The daemon that served it is the installed one, started from the venv.
        status = run(tailhub, "daemon", "status", cwd=tmp_path, env=env)
        pid = next(
            int(line.split()[-1])
            for line in status.stdout.decode().splitlines()
            if line.strip().startswith("pid")
        )
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0].decode().startswith(str(installed)), cmdline
    finally:
        subprocess.run(
            [tailhub, "daemon", "stop"], cwd=tmp_path, env=env, capture_output=True, timeout=60
        )
