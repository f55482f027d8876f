"""`python -m tailhub.client` is the `tailhub` command."""

from tailhub.client._entry import main

main()
