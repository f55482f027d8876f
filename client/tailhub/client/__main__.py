"""`python -m tailhub.client` is the `tailhub` command."""

from tailhub.client.cli import main

main()
