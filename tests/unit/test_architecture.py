"""The shape issue 17 asks of the code, held by the code: read from the source files (ast,
radon), never by starting anything.

- the cluster behind its seam: no module outside cluster/ imports it, except the composition
  root (placing.py), and nothing in cluster/ subclasses the Fetcher;
- sizes: no module over 500 lines, no function over radon C (complexity 15);
- one error module: every exception class of the daemon is defined in errors.py;
- docs/architecture.md names every module of daemon/ and client/, and only modules that exist.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

from radon.complexity import cc_visit  # type: ignore[import-untyped]
from radon.visitors import Class, Function  # type: ignore[import-untyped]

from tailhub.daemon.fetcher import Fetcher

ROOT = Path(__file__).resolve().parents[2]
DAEMON = ROOT / "daemon" / "tailhub" / "daemon"
CLIENT = ROOT / "client" / "tailhub" / "client"
CLUSTER = DAEMON / "cluster"
ERRORS = DAEMON / "errors.py"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

CLUSTER_PACKAGE = "tailhub.daemon.cluster"
# The one module outside cluster/ that may import it: it picks the placement.
COMPOSITION_ROOT = DAEMON / "placing.py"
FETCHER = "tailhub.daemon.fetcher.Fetcher"
MAX_MODULE_LINES = 500
MAX_COMPLEXITY = 15  # radon C at most


def modules(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT))


def dotted(path: Path) -> str:
    """The module's import name (`tailhub.daemon.cluster.node`)."""
    package = DAEMON if path.is_relative_to(DAEMON) else CLIENT
    parts = list(path.relative_to(package.parent.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def parse(path: Path) -> ast.Module:
    """A module's syntax tree, parsed once for all the tests here (none changes it)."""
    return ast.parse(path.read_text(), filename=str(path))


def imported(path: Path, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every module a file imports, wherever the import is (top level, TYPE_CHECKING, inside
    a function), with relative imports made absolute; `from a import b` gives `a.b` too, as b
    may be a module. Also importlib.import_module("...") and __import__("...") of a literal."""
    package = dotted(path) if path.name == "__init__.py" else dotted(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else None
            name = function.id if isinstance(function, ast.Name) else name
            first = node.args[0]
            if (
                name in {"import_module", "__import__"}
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield node.lineno, first.value


def is_cluster(module: str) -> bool:
    return module == CLUSTER_PACKAGE or module.startswith(CLUSTER_PACKAGE + ".")


def test_no_module_outside_cluster_imports_it_but_the_composition_root() -> None:
    offenders = [
        f"{shown(path)}:{line} imports {module}"
        for path in modules(DAEMON) + modules(CLIENT)
        if not path.is_relative_to(CLUSTER) and path != COMPOSITION_ROOT
        for line, module in imported(path, parse(path))
        if is_cluster(module)
    ]
    assert not offenders, (
        f"only {shown(COMPOSITION_ROOT)} may import {CLUSTER_PACKAGE} outside cluster/ "
        "(the rest asks its Placement):\n" + "\n".join(offenders)
    )


def test_the_composition_root_is_what_imports_the_cluster() -> None:
    # If placing.py stopped importing it, the exception above would name nothing real.
    tree = parse(COMPOSITION_ROOT)
    assert any(is_cluster(module) for _, module in imported(COMPOSITION_ROOT, tree)), (
        f"{shown(COMPOSITION_ROOT)} no longer imports {CLUSTER_PACKAGE}: "
        "which module is the composition root now?"
    )


def aliases(tree: ast.Module) -> dict[str, str]:
    """Names a module binds by import, to what they name (`F`: `tailhub.daemon.fetcher.Fetcher`)."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.partition(".")[0]] = alias.name
    return bound


def base_name(base: ast.expr, bound: dict[str, str]) -> str:
    """What a class's base names, as far as its source says (`fetcher.Fetcher` and an
    imported alias of it both give `tailhub.daemon.fetcher.Fetcher`)."""
    if isinstance(base, ast.Subscript):  # Generic[T], Protocol[T]
        base = base.value
    if isinstance(base, ast.Name):
        return bound.get(base.id, base.id)
    if isinstance(base, ast.Attribute):
        return f"{base_name(base.value, bound)}.{base.attr}"
    return ast.unparse(base)


def classes(tree: ast.Module) -> Iterator[ast.ClassDef]:
    """Every class a module defines, nested ones too."""
    yield from (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef))


def test_no_class_in_cluster_subclasses_the_fetcher() -> None:
    offenders = []
    for path in modules(CLUSTER):
        tree = parse(path)
        bound = aliases(tree)
        offenders += [
            f"{shown(path)}:{node.lineno} class {node.name}({base_name(base, bound)})"
            for node in classes(tree)
            for base in node.bases
            if base_name(base, bound) in {FETCHER, "Fetcher", "fetcher.Fetcher"}
        ]
        # Through a base defined elsewhere too: the classes as Python has them.
        module = importlib.import_module(dotted(path))
        offenders += [
            f"{shown(path)} class {name} is a Fetcher through {cls.__mro__[1:-1]}"
            for name, cls in vars(module).items()
            if inspect.isclass(cls)
            and cls.__module__ == module.__name__
            and issubclass(cls, Fetcher)
        ]
    assert not offenders, (
        "a cluster node writes through a sink (make_sink), it does not subclass the Fetcher:\n"
        + "\n".join(offenders)
    )


def test_no_module_is_over_500_lines() -> None:
    sizes = {path: len(path.read_text().splitlines()) for path in modules(DAEMON) + modules(CLIENT)}
    offenders = [
        f"{shown(path)}: {lines} lines" for path, lines in sizes.items() if lines > MAX_MODULE_LINES
    ]
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


def functions(blocks: list[Function | Class]) -> Iterator[Function]:
    """Every function radon measured: methods, closures and those of inner classes too."""
    for block in blocks:
        if isinstance(block, Class):
            yield from functions([*block.methods, *block.inner_classes])
        else:
            yield block
            yield from functions(block.closures)


def test_no_function_is_over_complexity_15() -> None:
    offenders = [
        f"{shown(path)}:{function.lineno} {function.fullname}: complexity {function.complexity}"
        for path in modules(DAEMON) + modules(CLIENT)
        for function in functions(cc_visit(path.read_text()))
        if function.complexity > MAX_COMPLEXITY
    ]
    assert not offenders, f"functions over radon C (complexity {MAX_COMPLEXITY}):\n" + "\n".join(
        offenders
    )


def is_exception_name(name: str, error_classes: set[str]) -> bool:
    last = name.rpartition(".")[2]
    builtin = getattr(builtins, last, None)
    return (
        last in error_classes
        or last.endswith(("Error", "Exception"))
        or (inspect.isclass(builtin) and issubclass(builtin, BaseException))
    )


def test_every_exception_class_of_the_daemon_is_in_errors_py() -> None:
    error_classes = {node.name for node in classes(parse(ERRORS))}
    offenders = []
    for path in modules(DAEMON):
        if path == ERRORS:
            continue
        tree = parse(path)
        bound = aliases(tree)
        offenders += [
            f"{shown(path)}:{node.lineno} class {node.name}({base_name(base, bound)})"
            for node in classes(tree)
            for base in node.bases
            if is_exception_name(base_name(base, bound), error_classes)
        ]
    assert not offenders, (
        f"exception classes outside {shown(ERRORS)} (one error tree: move them there, "
        "with their status and kind):\n" + "\n".join(offenders)
    )


def test_the_error_module_defines_exceptions() -> None:
    # If errors.py were emptied, the check above would pass on nothing.
    assert any(
        is_exception_name(ast.unparse(base), set())
        for node in classes(parse(ERRORS))
        for base in node.bases
    ), f"{shown(ERRORS)} defines no exception class"


# A module's row on the page: | `sources/file.py` | ... |, under a heading whose path gives
# its package (`daemon/tailhub/daemon/` or `client/tailhub/client/`; the last one given holds).
ROW = re.compile(r"^\|\s*`([\w/]+\.py)`\s*\|")
HEADING_ROOT = re.compile(r"^#{2,}.*`((?:daemon/tailhub/daemon|client/tailhub/client)/)`")
MODULE_SECTION = "## Each module's job"
# Any module the page names, in a table, a diagram or prose.
NAMED = re.compile(r"(?<![\w/.-])([\w/]+\.py)\b")


def listed_modules() -> set[Path]:
    """The modules the page's module tables list, as paths."""
    listed: set[Path] = set()
    root: Path | None = None
    in_section = False
    for line in ARCHITECTURE.read_text().splitlines():
        if line.startswith("## "):
            in_section = line.strip() == MODULE_SECTION
        if not in_section:
            continue
        heading = HEADING_ROOT.match(line)
        if heading:
            root = ROOT / heading.group(1)
        row = ROW.match(line)
        if row:
            assert root is not None, f"docs/architecture.md: {row.group(1)} listed under no package"
            listed.add(root / row.group(1))
    return listed


def test_the_architecture_page_lists_every_module() -> None:
    listed = listed_modules()
    missing = [shown(path) for path in modules(DAEMON) + modules(CLIENT) if path not in listed]
    assert not missing, (
        f"modules docs/architecture.md does not list under '{MODULE_SECTION}' "
        "(one line each: its job, from its docstring):\n" + "\n".join(missing)
    )


def test_every_module_the_architecture_page_names_exists() -> None:
    gone = [shown(path) for path in sorted(listed_modules()) if not path.is_file()]
    text = ARCHITECTURE.read_text()
    for number, line in enumerate(text.splitlines(), start=1):
        for name in NAMED.findall(line):
            if not any((root / name).is_file() for root in (DAEMON, CLIENT, ROOT)):
                gone.append(f"line {number}: {name}")
    assert not gone, "docs/architecture.md names modules that do not exist:\n" + "\n".join(gone)
