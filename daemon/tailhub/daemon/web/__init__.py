"""The web view (`tailhubd --http-listen`): a read-only page and its event streams, served by
aiohttp from the daemon's own event loop. A browser tab is one more follower: a cursor into the
job's log under the daemon-wide budget, never another fetch. Imported only when asked for."""
