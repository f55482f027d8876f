"""What the CLI prints of text from outside (names, reasons, events): escaped, so that it can
neither steer the terminal nor reorder the line."""

from __future__ import annotations

from tailhub.client._output import printable


def test_terminal_controls_and_bidi_overrides_are_shown_as_escapes() -> None:
    assert printable("train\x1b]0;x\x07 \u202egnp.exe\u2066") == (
        "train\\x1b]0;x\\x07 \\u202egnp.exe\\u2066"
    )
    assert printable("line\nnext\tcol\r") == "line\\nnext\\tcol\\r"
    # Letters of any script stay as they are.
    assert printable("données 数据 بيانات") == "données 数据 بيانات"
