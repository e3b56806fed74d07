"""fs/movetype.py: which renames give a file the type of its new name."""

from __future__ import annotations

from ossmount.fs.movetype import OCTET_STREAM, guessed_type, renames_type, retyped


def test_the_guess_reads_the_last_component_only() -> None:
    assert guessed_type("site.html/index") == OCTET_STREAM
    assert guessed_type("a/b/index.HTML") == "text/html"
    assert guessed_type("a/.index.html.Xy12Ab") == OCTET_STREAM  # rsync's temp name


def test_only_a_change_of_guessed_type_is_a_retype() -> None:
    assert not renames_type("a.txt", "b.txt")
    assert not renames_type("x", "y.unknownext")
    assert renames_type(".index.html.Xy12Ab", "index.html")


def test_a_default_type_follows_the_new_name_and_the_other_headers_stay() -> None:
    sent = {"x-oss-meta-mode": "33188"}  # uploaded without a type: the server's default
    assert retyped(".a.css.Q1", "a.css", sent) == {**sent, "content-type": "text/css"}
    octet = {"content-type": "application/octet-stream"}
    assert retyped("a.bin", "a.png", octet) == {"content-type": "image/png"}
    old_guess = {"content-type": "text/plain; charset=utf-8"}
    assert retyped("a.txt", "a.html", old_guess) == {"content-type": "text/html"}


def test_a_type_set_on_purpose_moves_with_the_file() -> None:
    assert retyped("notes.dat", "notes.html", {"content-type": "text/markdown"}) is None
    assert retyped("a.bin", "a.html", {"content-type": "text/html"}) is None  # already right
