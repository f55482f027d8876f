"""The lean path's command lines (_lean.py): those it serves, parsed as click would; any other
is None, and the full CLI parses it (and says what is wrong with it, if anything)."""

from __future__ import annotations

import os

from tailhub.client._owner_link import Unusable

MAX_JOB_ID = 2**63 - 1
MAX_TAIL_LINES = 10**9
MAX_NAME_BYTES = 256  # tailhub.daemon.limits.MAX_NAME_BYTES (a longer one: the full CLI says so)


class Plan:
    """A command line the lean path serves: what it asks for."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.home: str | None = None  # --home as given (the command's wins over the root's)
        self.follow = True
        self.tail: int | None = None
        self.job_id: int | None = None
        self.detach = False
        self.name: str | None = None
        self.envs: list[str] = []
        self.backend: str | None = None
        self.task_file: str | None = None


def parse(argv: list[str]) -> Plan | None:
    """The plan of a command line the lean path covers, None for any other."""
    args = list(argv)
    root_home = _take_home(args)
    if args[:1] != ["jobs"] or len(args) < 2 or args[1] not in ("logs", "launch"):
        return None
    plan = Plan(args[1])
    rest = args[2:]
    parsed = _parse_logs(plan, rest) if plan.command == "logs" else _parse_launch(plan, rest)
    if not parsed:
        return None
    if plan.home is None:
        plan.home = root_home
    return plan


def _take_home(args: list[str]) -> str | None:
    """The root's --home options (before the command), taken off `args`; the last wins."""
    home = None
    while args:
        if args[0] == "--home" and len(args) > 1:
            home = args[1]
            del args[:2]
        elif args[0].startswith("--home="):
            home = args.pop(0)[len("--home=") :]
        else:
            break
    return home


def _options(rest: list[str], flags: dict[str, str], valued: set[str]) -> list[tuple[str, str]]:
    """(option, value) pairs, positionals as ("", value); ValueError for anything else."""
    pairs = []
    index = 0
    while index < len(rest):
        arg = rest[index]
        index += 1
        name, equals, value = arg.partition("=")
        if arg in flags:
            pairs.append((flags[arg], ""))
        elif arg in valued and index < len(rest):
            pairs.append((arg, rest[index]))
            index += 1
        elif equals and name in valued and name.startswith("--"):
            pairs.append((name, value))
        elif arg.startswith("-") or not arg:
            raise ValueError(arg)  # an option of the full CLI's, `--`, `-`: not ours
        else:
            pairs.append(("", arg))
    return pairs


def _parse_logs(plan: Plan, rest: list[str]) -> bool:
    flags = {"-f": "follow", "--follow": "follow", "--no-follow": "no-follow"}
    try:
        pairs = _options(rest, flags, {"--home", "--tail"})
    except ValueError:
        return False
    for option, value in pairs:
        if option == "--home":
            plan.home = value
        elif option in ("follow", "no-follow"):
            plan.follow = option == "follow"
        elif option == "--tail":
            if not (value.isascii() and value.isdigit()) or int(value) > MAX_TAIL_LINES:
                return False
            plan.tail = int(value)
        elif plan.job_id is not None or not (value.isascii() and value.isdigit()):
            return False  # several jobs, or a name: the full CLI
        else:
            plan.job_id = int(value)
            if not 1 <= plan.job_id <= MAX_JOB_ID:
                return False
    return True


def _parse_launch(plan: Plan, rest: list[str]) -> bool:
    try:
        pairs = _options(
            rest, {"--async": "async"}, {"--home", "--name", "-n", "--env", "--backend"}
        )
    except ValueError:
        return False
    for option, value in pairs:
        if option == "--home":
            plan.home = value
        elif option == "async":
            plan.detach = True
        elif option in ("--name", "-n"):
            plan.name = value
        elif option == "--env":
            plan.envs.append(value)
        elif option == "--backend":
            plan.backend = value
        elif plan.task_file is not None:
            return False
        else:
            plan.task_file = value
    if plan.task_file is None or plan.backend not in (None, "local", "skypilot"):
        return False
    size = len((plan.name or "").encode("utf-8", "surrogatepass"))
    return size <= MAX_NAME_BYTES


def home_path(plan: Plan) -> str:
    """The state directory (resolve_home's): --home, else $TAILHUB_HOME, else ~/.tailhub;
    Unusable where the full CLI has something to say (empty, an unknown ~user)."""
    raw = plan.home if plan.home is not None else os.environ.get("TAILHUB_HOME", "~/.tailhub")
    if not raw:
        raise Unusable("an empty home")
    path = os.path.expanduser(raw)
    if path.startswith("~"):
        raise Unusable("a home under an unknown user's")
    return path if path.startswith("/") else os.path.join(os.getcwd(), path)


def home_flag(plan: Plan) -> str:
    """` --home DIR` for a command line we suggest, when the user gave one (_cli_common's)."""
    if not plan.home:
        return ""
    import shlex

    return f" --home {shlex.quote(plan.home)}"
