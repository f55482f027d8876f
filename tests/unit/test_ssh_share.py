"""Which commands share an ssh connection, and by what destination (sources/ssh_share.py);
the sharing at work, against a real sshd: tests/e2e/test_ssh_share.py."""

from __future__ import annotations

from tailhub.daemon.sources.ssh_share import destination


def test_an_ssh_command_is_keyed_by_its_options_and_destination() -> None:
    argv = ["ssh", "-p", "2222", "-i", "/k", "-oBatchMode=yes", "u@host", "tail", "-f", "log"]
    assert destination(argv) == ["ssh", "-p", "2222", "-i", "/k", "-oBatchMode=yes", "u@host"]
    assert destination(["/usr/bin/ssh", "-t", "host", "top"]) == ["/usr/bin/ssh", "-t", "host"]
    assert destination(["ssh", "-p2222", "--", "host", "cat"]) == ["ssh", "-p2222", "--", "host"]


def test_a_command_that_says_anything_of_sharing_or_is_not_ssh_is_left_alone() -> None:
    for argv in (
        ["ssh", "-o", "ControlMaster=no", "host", "cat"],
        ["ssh", "-oControlPath=/x", "host", "cat"],
        ["ssh", "-o", " controlpersist=10", "host", "cat"],
        ["ssh", "-S", "/sock", "host", "cat"],
        ["ssh", "-vM", "host", "cat"],
        ["ssh", "-L", "8080:localhost:80", "host", "cat"],  # a forwarding: not the master's
        ["ssh", "-fN", "host"],
        ["ssh", "-p", "22"],  # no destination
        ["kubectl", "logs", "-f", "pod"],
        [],
    ):
        assert destination(argv) is None, argv
