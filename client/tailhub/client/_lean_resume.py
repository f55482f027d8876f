"""The lean path's follow goes on over gRPC (_lean.py): where its owner-endpoint stream broke
(the daemon stopping or gone) or ended with an error, at the next byte.

The full client's follow takes over with the lean follower's place (`Resumed`): when the stream
broke, it waits for the daemon as its own broken stream would (its lines, its timeout); else
it asks again and says what the daemon says. Either way, what is printed is the full CLI's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tailhub.client import Client, LogChunk, LogEnd, LogEvent, resolve_paths
from tailhub.client._follow import Resumed
from tailhub.client._output import note

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tailhub.client._lean import Cursor, Item


def resume(
    home: str, cursor: Cursor, *, follow: bool, tail: int | None, broken: bool
) -> Iterator[Item]:
    """The rest of the log of `cursor`'s job, as the lean path's items."""
    from tailhub.client._lean import LeanEnd

    resumed = Resumed(
        next_offset=cursor.next_offset,
        events_offset=cursor.events_offset,
        events_here=tuple(cursor.events_here),
        broken=broken,
    )
    # The home was checked by the lean path already (as Client.connect checks it).
    with Client(resolve_paths(home), on_wait=note) as client:
        for item in client.resume_follow(cursor.job_id, resumed, follow=follow, tail_lines=tail):
            if isinstance(item, LogChunk):
                yield ("C", item.offset, item.data)
            elif isinstance(item, LogEvent):
                yield ("E", item.offset, item.message)
            elif isinstance(item, LogEnd):
                yield (
                    "Z",
                    item.log_size,
                    LeanEnd(
                        item.state.value,
                        item.exit_code,
                        item.reason,
                        item.log_size,
                        item.finished,
                    ),
                )
                return
