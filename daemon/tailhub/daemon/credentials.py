"""tailhub's own credentials, kept out of the jobs it runs.

A launch carries its shell's environment, which may hold the token the CLI used
(`TAILHUB_TOKEN`) or the cluster's Redis URL with its password (`TAILHUB_REDIS`). A job that
inherited them would print them into a log any read token can follow, and the daemon would
store them in its database. They are dropped where a launch enters the daemon (and again by the
runner, for records written before); a job gets one only when its owner names it in `envs` or
`--env`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

CREDENTIAL_VARIABLES = frozenset({"TAILHUB_TOKEN", "TAILHUB_REDIS"})


def without_credentials(
    environment: Mapping[str, str] | Iterable[tuple[str, str]],
) -> dict[str, str]:
    """The environment less tailhub's credentials."""
    pairs = environment.items() if isinstance(environment, Mapping) else environment
    return {key: value for key, value in pairs if key not in CREDENTIAL_VARIABLES}
