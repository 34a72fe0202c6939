"""musicnn's tag vocabularies, in output order (torch-free: configs and the CLI read them)."""

from __future__ import annotations

MTT_LABELS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip
MSD_LABELS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill",
    "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock",
    "60s", "rnb", "indie pop", "sad", "House", "happy",
)  # fmt: skip
LABELS: dict[str, tuple[str, ...]] = {"MTT_musicnn": MTT_LABELS, "MSD_musicnn": MSD_LABELS}

# how a tag reads in a sentence, where its label is shorthand
_PHRASES = {
    "00s": "2000s",
    "60s": "1960s",
    "70s": "1970s",
    "80s": "1980s",
    "90s": "1990s",
    "Hip-Hop": "hip hop",
    "rnb": "r&b",
    "House": "house",
    "Mellow": "mellow",
    "Progressive rock": "progressive rock",
}


def phrase(label: str) -> str:
    """The words that stand for tag `label` in a prompt or a caption."""
    return _PHRASES.get(label, label)
