from __future__ import annotations

from server.engine.stops import StopMatcher


def stream(matcher: StopMatcher, pieces: list[str]) -> str:
    out = "".join(matcher.feed(p) for p in pieces)
    return out + matcher.flush()


def test_no_stops_passes_through() -> None:
    assert stream(StopMatcher([]), ["a", "b"]) == "ab"


def test_stop_split_across_pieces_never_leaks() -> None:
    m = StopMatcher(["</end>"])
    sent = [m.feed(p) for p in ["hello </", "en", "d> more"]]
    assert sent == ["hello ", "", ""]
    assert m.stopped
    assert m.flush() == ""


def test_held_text_is_released_when_it_is_not_a_stop() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("ab ST") == "ab "
    assert m.feed("ILL") == "STILL"
    assert m.feed("S") == ""
    assert m.flush() == "S"


def test_earliest_of_several_stops_wins() -> None:
    m = StopMatcher(["world", "o w"])
    assert m.feed("hello world") == "hell"


def test_stop_at_the_very_start() -> None:
    m = StopMatcher(["\n"])
    assert m.feed("\nrest") == ""
    assert m.stopped


def test_the_stop_string_that_ended_it_is_named() -> None:
    m = StopMatcher(["END", "two"])
    assert m.feed("one tw") == "one "
    assert m.feed("o three END") == ""
    assert m.stopped and m.matched == "two"
    assert StopMatcher(["x"]).matched is None
