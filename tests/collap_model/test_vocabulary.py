"""The section renaming the vocabulary benchmark (benchmarks/vocabulary.py) reads texts through."""

from __future__ import annotations

from benchmarks.vocabulary import named_kind, renamed
from collap_model.synth.phrases import HELDOUT, TRAIN


def test_held_out_section_names_read_as_the_training_books_and_nothing_else_moves() -> None:
    text = "Next, the second main hook, welcoming french horn, after the verse section"
    assert (
        renamed(text, HELDOUT, TRAIN)
        == "Next, the second chorus, welcoming french horn, after the verse"
    )
    assert renamed("The Coda strips away the riser's drums", HELDOUT, TRAIN) == (
        "The outro strips away the build-up's drums"
    )
    # whole names only: a word that merely contains one stays
    assert renamed("a codas-like hookline", HELDOUT, TRAIN) == "a codas-like hookline"
    assert named_kind(text, HELDOUT) == "chorus" and named_kind("drums enter", HELDOUT) == "none"
    assert named_kind("the chorus part", TRAIN) == "chorus"
