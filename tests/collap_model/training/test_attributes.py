"""Per-clip attribute targets read off a manifest's sections, and the head that learns them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from collap_model.synth.dataset import parse_entry
from collap_model.training.attributes import AttributeHead, clip_attributes, label_names


def entry(sections: list[dict[str, object]] | None, style: str | None = "jazz"):  # type: ignore[no-untyped-def]
    raw: dict[str, object] = {"audio": "a.flac", "caption": "x"}
    if sections is not None:
        raw["sections"] = sections
    if style:
        raw["style"] = style
    from pathlib import Path

    return parse_entry(raw, Path("/data"))


SONG = [
    {"name": "intro", "start": 0.0, "end": 10.0, "instruments": ["piano"], "drums": "none",
     "level": ["p", "p"], "tempo": 80, "key": "A minor", "density": "sparse"},
    {"name": "chorus", "start": 10.0, "end": 30.0, "instruments": ["piano", "drums", "strings"],
     "drums": "backbeat", "level": ["f", "ff"], "tempo": 120, "tempo_end": 140,
     "key": "C major", "density": "dense"},
]  # fmt: skip


def test_targets_weigh_each_section_by_its_share_of_the_clip() -> None:
    times = np.array([[0, 10], [5, 15], [20, 30]], dtype=np.float32)
    attrs = clip_attributes([entry(SONG)], times, np.array([0, 3]))
    col = {n: k for k, n in enumerate(attrs.labels)}
    t = attrs.targets
    assert attrs.known.all()
    assert t[:, col["instrument:piano"]].tolist() == [1.0, 1.0, 1.0]
    assert t[:, col["instrument:strings"]].tolist() == [0.0, 0.5, 1.0]
    assert t[:, col["groove:none"]].tolist() == [1.0, 0.5, 0.0]
    assert t[:, col["section:chorus"]].tolist() == [0.0, 0.5, 1.0]
    assert t[:, col["style:jazz"]].tolist() == [1.0, 1.0, 1.0]
    assert t[0, col["level"]] == pytest.approx(0.2) and t[2, col["level"]] == pytest.approx(0.9)
    assert t[0, col["tempo"]] == pytest.approx(0.25) and t[2, col["tempo"]] == pytest.approx(0.5625)
    assert t[:, col["minor"]].tolist() == [1.0, 0.5, 0.0]


def test_songs_without_sections_have_no_targets() -> None:
    times = np.array([[0, 10], [0, 10], [5, 15]], dtype=np.float32)
    attrs = clip_attributes([entry(None, None), entry(SONG)], times, np.array([0, 1, 3]))
    assert attrs.known.tolist() == [False, True, True]
    assert not attrs.targets[0].any()
    assert label_names([entry(None, None)]) == []


def test_the_head_learns_targets_and_ignores_unknown_clips() -> None:
    gen = torch.Generator().manual_seed(0)
    clips = torch.nn.functional.normalize(torch.randn(64, 16, generator=gen), dim=-1)
    targets = (clips[:, :3] > 0).float()  # three labels a linear head can read
    known = torch.ones(64, dtype=torch.bool)
    known[:8] = False
    head = AttributeHead(16, 3)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    with torch.no_grad():
        first = float(head.loss(clips, targets, known))
    for _ in range(200):
        opt.zero_grad()
        head.loss(clips, targets, known).backward()
        opt.step()
    with torch.no_grad():
        assert float(head.loss(clips, targets, known)) < 0.3 * first
        garbage = targets.clone()
        garbage[:8] = 1 - garbage[:8]  # what unknown clips hold does not matter
        assert float(head.loss(clips, garbage, known)) == float(head.loss(clips, targets, known))
        assert float(head.loss(clips, targets, torch.zeros(64, dtype=torch.bool))) == 0.0


def test_plain_sections_without_the_synthetic_facts_give_no_targets() -> None:
    """A user's manifest may mark sections by name and time only: nothing to predict."""
    plain = [{"name": "verse", "start": 0.0, "end": 20.0}]
    attrs = clip_attributes([entry(plain, "rock")], np.array([[0, 10]], dtype=np.float32),
                            np.array([0, 1]))  # fmt: skip
    assert attrs.labels == [] and not attrs.known.any()
