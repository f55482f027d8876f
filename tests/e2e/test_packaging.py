"""The locks: what `make test` installs is what pyproject.toml promises users.

`make lock` resolves every direct dependency to its lowest allowed version, so the suite runs
against the floors of the runtime ranges: a floor raised or lowered without `make lock`, or a
dependency added without it, fails here.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", re.MULTILINE)


def pins(lock: str) -> dict[str, set[Version]]:
    """Name -> the versions the lock pins (two only where markers split them by Python)."""
    found: dict[str, set[Version]] = {}
    text = (ROOT / "requirements" / lock).read_text()
    for name, version in PIN.findall(text):
        found.setdefault(canonicalize_name(name), set()).add(Version(version))
    return found


def requirements(extra: str | None) -> list[Requirement]:
    """The project's requirements as installed (`make test` reinstalls when pyproject changes)."""
    found = [Requirement(line) for line in metadata.requires("tailhub") or []]
    if extra is None:
        return [r for r in found if r.marker is None]
    return [r for r in found if r.marker is not None and r.marker.evaluate({"extra": extra})]


def runtime_requirements() -> list[Requirement]:
    return requirements(None)


def dev_requirements() -> list[Requirement]:
    return requirements("dev")


def floor(requirement: Requirement) -> Version:
    (lowest,) = (spec.version for spec in requirement.specifier if spec.operator in (">=", "=="))
    return Version(lowest)


def test_every_runtime_dependency_is_locked_at_its_floor() -> None:
    locked = pins("dev.lock")
    assert "grpcio" in {r.name for r in runtime_requirements()}
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert locked.get(name) == {floor(requirement)}, (
            f"{name}: pyproject's floor is {floor(requirement)}, the lock pins {locked.get(name)}: "
            "run `make lock`"
        )


def test_every_dev_dependency_is_locked_at_its_pin() -> None:
    locked = pins("dev.lock")
    for requirement in dev_requirements():
        name = canonicalize_name(requirement.name)
        assert locked.get(name) == {floor(requirement)}, f"{name}: run `make lock`"


def test_runtime_lock_installs_what_the_suite_runs_against() -> None:
    dev, runtime = pins("dev.lock"), pins("runtime.lock")
    for name, versions in runtime.items():
        assert dev.get(name) == versions, (
            f"{name}: runtime.lock {versions}, dev.lock {dev.get(name)}"
        )
    assert {canonicalize_name(r.name) for r in runtime_requirements()} <= runtime.keys()


def test_every_locked_package_carries_hashes() -> None:
    for lock in ("dev.lock", "runtime.lock"):
        text = (ROOT / "requirements" / lock).read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
        for entry in entries:
            if PIN.match(entry):
                assert "--hash=sha256:" in entry, f"{lock}: {entry.splitlines()[0]} has no hash"
