"""The unit layer: in-process, no subprocess, no daemon process."""
