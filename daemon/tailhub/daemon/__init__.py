"""tailhubd: one upstream fetch per job, fanned out to any number of subscribers."""

__version__ = "0.2.0"
