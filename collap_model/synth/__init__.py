"""Synthetic training data: structured songs rendered with FluidSynth, with temporal captions.

    plan_song(seed) -> SongPlan            sections with instruments, tempo, key, dynamics
    arrange(plan) -> bytes                 the MIDI file
    describe(plan, phrasing) -> SongText   long caption with m:ss timestamps, short queries
    generate_dataset(out, songs, seed)     audio/, midi/ and manifest.jsonl
    read_manifest(path) -> [ManifestEntry] validated manifest (also for real data)

Names are imported lazily so that `collap --help` does not load the generator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collap_model.synth.arrange import arrange
    from collap_model.synth.captions import SongText, describe
    from collap_model.synth.dataset import (
        ManifestEntry,
        ManifestError,
        ManifestSection,
        SynthReport,
        generate_dataset,
        read_manifest,
        write_manifest,
    )
    from collap_model.synth.structure import SongPlan, SynthError, plan_song

__all__ = [
    "ManifestEntry",
    "ManifestError",
    "ManifestSection",
    "SongPlan",
    "SongText",
    "SynthError",
    "SynthReport",
    "arrange",
    "describe",
    "generate_dataset",
    "plan_song",
    "read_manifest",
    "write_manifest",
]

_WHERE = {
    "arrange": "collap_model.synth.arrange",
    "SongText": "collap_model.synth.captions",
    "describe": "collap_model.synth.captions",
    "ManifestEntry": "collap_model.synth.dataset",
    "ManifestError": "collap_model.synth.dataset",
    "ManifestSection": "collap_model.synth.dataset",
    "SynthReport": "collap_model.synth.dataset",
    "generate_dataset": "collap_model.synth.dataset",
    "read_manifest": "collap_model.synth.dataset",
    "write_manifest": "collap_model.synth.dataset",
    "SongPlan": "collap_model.synth.structure",
    "SynthError": "collap_model.synth.structure",
    "plan_song": "collap_model.synth.structure",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'collap_model.synth' has no attribute {name!r}")
