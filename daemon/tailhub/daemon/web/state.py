"""What every handler of the web view shares: the daemon's parts it reads, its limits, and
who the request reads as. Handlers find it as `request.app[STATE]`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tailhub.daemon.budget import SendBudget
from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.fanout import FilterPacer
from tailhub.daemon.manager import JobManager
from tailhub.daemon.tokens import TokenIndex
from tailhub.daemon.web.connections import Connections
from tailhub.daemon.web.hosts import HostCheck
from tailhub.daemon.web.login import LoginCodes
from tailhub.daemon.web.sessions import CookieSigner, Identity
from tailhub.daemon.web.settings import WebSettings
from tailhub.daemon.web.sse import StreamSlots
from tailhub.daemon.wire import EncodedChunkCache

# The encoded `chunk` events of single-job streams, shared by every tab at the same place.
EVENT_CACHE_BYTES = 16 * 1024 * 1024


@dataclass
class WebState:
    manager: JobManager
    config: DaemonConfig
    settings: WebSettings
    budget: SendBudget
    # Shared with gRPC's filtered followers: filtering takes at most about half the loop.
    filter_pacer: FilterPacer
    tokens: TokenIndex
    signer: CookieSigner
    codes: LoginCodes
    slots: StreamSlots
    events: EncodedChunkCache
    # The listener's connections: their caps and deadlines (connections.py).
    connections: Connections
    # The names the listener answers to, known once it is bound (its port).
    hosts: HostCheck | None = None


STATE = web.AppKey("tailhub_state", WebState)
# Set on each request by the session check (app.py): who it reads as.
IDENTITY = "tailhub_identity"


def state_of(request: web.Request) -> WebState:
    return request.app[STATE]


def identity_of(request: web.Request) -> Identity:
    identity: Identity = request[IDENTITY]
    return identity


def json_response(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data, separators=(",", ":")).encode(),
        content_type="application/json",
    )


def json_error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def job_id_of(request: web.Request) -> int | None:
    """The `{id}` of the path: a job id (decimal, 64-bit), else None."""
    return parse_job_id(request.match_info.get("id", ""))


def parse_job_id(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value < 2**63 else None
