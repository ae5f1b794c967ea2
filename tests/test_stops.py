"""The stop-string cutter on its own: exact cuts over arbitrary delta splits."""

from __future__ import annotations

import pytest

from phi3_aipc.stops import StopStringCutter, cut_at_stop


def _feed(deltas: list[str], stops: list[str]) -> tuple[list[str], str | None]:
    cutter = StopStringCutter(stops)
    out = [cutter.feed(d) for d in deltas]
    out.append(cutter.flush())
    return [o for o in out if o], cutter.matched


@pytest.mark.parametrize("split", [1, 2, 3, 5])
def test_every_split_cuts_at_the_first_character_of_the_stop(split: int) -> None:
    text = "The answer is 42.\nObservation: done"
    deltas = [text[i : i + split] for i in range(0, len(text), split)]
    out, matched = _feed(deltas, ["\nObservation:"])
    assert "".join(out) == "The answer is 42." and matched == "\nObservation:"


def test_a_partial_match_is_held_back_then_released() -> None:
    cutter = StopStringCutter(["STOP"])
    assert cutter.feed("go ST") == "go "
    assert cutter.feed("O") == ""
    assert cutter.feed("P") == "" and cutter.matched == "STOP"
    cutter = StopStringCutter(["STOP"])
    assert cutter.feed("ST") == ""
    assert cutter.feed("ART") == "START"
    assert cutter.flush() == ""


def test_the_earliest_of_several_stops_wins() -> None:
    assert cut_at_stop("a-b=c", ["=", "-"]) == ("a", "-")
    assert cut_at_stop("abc", []) == ("abc", None)
    assert cut_at_stop("abc", ["x"]) == ("abc", None)


def test_held_back_text_is_flushed_when_generation_ends() -> None:
    out, matched = _feed(["hello wor"], ["world!"])
    assert "".join(out) == "hello wor" and matched is None
