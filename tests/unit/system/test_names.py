"""Tests for scribed.system.names: every name scribed makes fits NAME_MAX, cut on a character boundary."""

from __future__ import annotations

import os

import pytest

from scribed.system.names import NAME_MAX, fit_name, is_scribed_temp, temp_name


def _bytes(name: str) -> int:
    return len(os.fsencode(name))


def test_a_name_that_fits_is_unchanged() -> None:
    assert fit_name("meeting", ".txt") == "meeting.txt"
    stem = "x" * (NAME_MAX - 4)
    assert fit_name(stem, ".txt") == stem + ".txt"  # exactly 255 bytes


@pytest.mark.parametrize("char", ["x", "é", "日", "😀"])  # 1, 2, 3 and 4 bytes in UTF-8
def test_a_long_stem_is_cut_on_a_character_boundary_and_keeps_the_extension(char: str) -> None:
    stem = char * 300
    name = fit_name(stem, ".failed.txt")
    assert _bytes(name) <= NAME_MAX
    assert name.endswith(".failed.txt")
    kept = name[: -len(".failed.txt")].rsplit("~", 1)[0]
    assert kept and set(kept) == {char}  # whole characters only: it decodes cleanly
    os.fsencode(name).decode("utf-8")  # strict: no broken sequence


def test_two_long_names_with_one_prefix_stay_different() -> None:
    a, b = "p" * 300 + "-monday", "p" * 300 + "-tuesday"
    assert fit_name(a, ".txt") != fit_name(b, ".txt")
    assert fit_name(a, ".txt") == fit_name(a, ".txt")  # deterministic: decided once, found again


def test_undecodable_names_are_cut_too() -> None:
    stem = os.fsdecode(b"\xff\xfe" * 200)  # not UTF-8: surrogate-escaped
    name = fit_name(stem, ".txt")
    assert _bytes(name) <= NAME_MAX and name.endswith(".txt")


@pytest.mark.parametrize("name", ["a.txt", "m" * 251 + ".txt", "é" * 125 + ".json", os.fsdecode(b"\xff" * 250)])
def test_temp_names_fit_and_are_recognised(name: str) -> None:
    tmp = temp_name(name)
    assert _bytes(tmp) <= NAME_MAX
    assert tmp.startswith(".") and is_scribed_temp(tmp)
    assert temp_name(name) != tmp  # fresh each time


def test_what_counts_as_a_scribed_temporary() -> None:
    assert is_scribed_temp(".m.txt.scribed-1a2b3c4d.tmp")
    assert is_scribed_temp(".line\nbreak.txt.scribed-1a2b3c4d.tmp")
    for name in ("m.txt", ".m.txt", "m.txt.scribed-1a2b3c4d.tmp", ".m.txt.scribed-1a2b.tmp.wav", "scribed-1a2b.pcm"):
        assert not is_scribed_temp(name), name
