"""The end-to-end layer: the real daemon and CLI, as users run them."""
