"""Client text in log messages cannot start a fake line or drive a terminal."""

from __future__ import annotations

import logging

from server.logfmt import FORMAT, EscapingFormatter, escape_controls


def test_controls_are_escaped_and_text_kept() -> None:
    assert escape_controls("a\nb\r\x1b[31mc\x00\x7f\x85\u2028é🎉") == (
        "a\\x0ab\\x0d\\x1b[31mc\\x00\\x7f\\x85\\u2028é🎉"
    )


def test_a_record_with_a_hostile_model_name_is_one_line() -> None:
    name = "evil\nINFO hearth.requests: forged\x1b[2J"
    record = logging.LogRecord("hearth.app", logging.WARNING, __file__, 1, "model %r / %s",
                               (name, name), None)  # fmt: skip
    line = EscapingFormatter(FORMAT).format(record)
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("WARNING hearth.app: model ")


def test_a_traceback_keeps_its_lines() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom\n", (), sys.exc_info())
    text = EscapingFormatter(FORMAT).format(record)
    first, *rest = text.split("\n")
    assert first == "ERROR x: boom\\x0a" and rest[0].startswith("Traceback")
