"""The times texts state (collap_model/training/timing.py): what localisation is measured on
and trained with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from collap_model.synth import describe, plan_song
from collap_model.training.timing import (
    caption_times,
    query_times,
    strip_time,
    target_clip,
    timed_texts,
)


@pytest.mark.parametrize(
    ("sentence", "text", "seconds"),
    [
        ("At 1:05 the chorus brings in drums.", "The chorus brings in drums.", 65.0),
        ("The verse arrives at 0:16, with bass.", "The verse arrives, with bass.", 16.0),
        ("At 0:52, the ramp-up, with glockenspiel.", "The ramp-up, with glockenspiel.", 52.0),
        ("Next, from 0:22, the stanza, built on harp.", "Next, the stanza, built on harp.", 22.0),
        ("1:14: the hook section, scored for flute.", "The hook section, scored for flute.", 74.0),
        ("By 2:02 we reach the riser.", "We reach the riser.", 122.0),
        ("0:43 marks the start of the riser.", "Marks the start of the riser.", 43.0),
        ("It swells close to 10:30, louder.", "It swells, louder.", 630.0),
        ("where at 1:05 drums come in", "drums come in", 65.0),
    ],
)
def test_strip_time_removes_the_time_and_its_words(
    sentence: str, text: str, seconds: float
) -> None:
    assert strip_time(sentence) == (text, seconds)


def test_a_sentence_with_no_time_or_two_is_not_timed() -> None:
    for sentence in ("A soft piano opens the song.", "From 0:10 to 0:20 it is quiet.", "At 3 pm"):
        assert strip_time(sentence) == (sentence, None)


def test_every_timed_sentence_of_generated_captions_loses_its_digits() -> None:
    """Every phrasebook: each section start narrated with a time yields its sentence without
    a digit left, at that section's start (rounded to the second, as captions write it)."""
    for seed in range(4):
        plan = plan_song(seed)
        starts = {round(s.start) for s in plan.sections}
        for phrasing in ("train", "train-alt", "heldout"):
            items = caption_times(describe(plan, phrasing).caption)
            assert len(items) >= 3
            for text, seconds in items:
                assert not any(ch.isdigit() for ch in text.split("BPM")[0]), text
                assert seconds in starts
                assert text[:1].isalpha() and "  " not in text and ", ," not in text


def test_timed_texts_joins_caption_sentences_and_timed_queries() -> None:
    entry = {
        "caption": "Piano. The verse arrives at 0:16, with bass. At 1:05 drums enter; an outro.",
        "timed_queries": [{"text": "drums come in", "time": 65.2}],
    }
    assert timed_texts(entry) == [
        ("The verse arrives, with bass.", 16.0),
        ("Drums enter;", 65.0),
        ("drums come in", 65.2),
    ]
    assert query_times({"caption": "x"}) == []


def test_timed_texts_reads_a_manifest_entry(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from collap_model.synth.dataset import parse_entry

    entry = parse_entry(
        {"audio": "a.flac", "caption": "At 0:30 it ends.",
         "timed_queries": [{"text": "a drop", "time": 12.5}]},
        tmp_path,
    )  # fmt: skip
    assert timed_texts(entry) == [("It ends.", 30.0), ("a drop", 12.5)]


def test_target_clip_is_the_last_clip_starting_at_or_before_the_time() -> None:
    times = np.array([[0, 10], [5, 15], [10, 20], [15, 25], [17, 27]], dtype=np.float32)
    assert target_clip(0.0, times) == 0
    assert target_clip(4.9, times) == 0
    assert target_clip(5.0, times) == 1
    assert target_clip(12.0, times) == 2
    assert target_clip(16.0, torch.from_numpy(times)) == 3
    assert target_clip(99.0, times.tolist()) == 4  # the clip aligned to the end
    assert target_clip(-1.0, times) == 0
