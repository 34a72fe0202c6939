"""Datasets: a folder of audio files plus `manifest.jsonl`; reading, writing and generating them.

Manifest format (UTF-8 JSON Lines: one object per line; blank lines are ignored). The same
format serves synthetic corpora and a user's own music with their own captions:

    audio     str, required. The audio file, relative to the manifest's folder (or absolute).
              Any format the indexer decodes (FLAC, WAV, MP3, ...).
    caption   str, required, non-blank. The long text: what happens when in the song.
    queries   list of str, optional (default []). Short texts that are each true of the song.
    sections  list of objects, optional. Each {"name": str, "start": seconds, "end": seconds,
              ...} with start < end, in time order, not overlapping. Synthetic data adds
              "instruments" (names), "programs" (GM programs), "tempo" (felt beats per minute;
              "tempo_end" when it ramps), "key" ("A minor"), "time_signature" ("6/8"),
              "dynamics" ("steady", "crescendo", "decrescendo", "sudden drop", "fade out"),
              "level" ([start, end] markings pp..ff), "density" and "drums" (the groove).
    duration  number, optional. Seconds of audio.
    seed      int, optional. The synthetic song's seed (`collap synth`).
    midi      str, optional. The MIDI file a synthetic song was rendered from.
    style     str, optional. The synthetic song's style ("pop", "jazz", "ambient", ...).
    phrasings str, optional. The phrasebook of its caption and queries: "train", "train-alt"
              or "heldout".
    timed_queries  list of {"text": str, "time": seconds}, optional. Short queries for one
              moment each (an instrument entering, a section starting, a drop), worded without
              a time, with the second that moment starts (localisation).
    soundfont str, optional. The soundfont file a synthetic song was rendered with.
    production object, optional. Its production draw (synth/produce.py), when it has one.
    text      str, optional. Manifests of clips with the text written for them (several clips
              may share one text, e.g. ../shared/external-dev) may give `text` in place of
              `caption`; it is read as the caption.

Other keys are kept and ignored. Times are seconds from the start of the audio file.
Example line:
    {"audio": "audio/00000.flac", "caption": "A soft solo piano opens ...", "queries": [...],
     "sections": [{"name": "intro", "start": 0.0, "end": 24.0, "tempo": 72}], "duration": 95.2}
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from collap_model.synth.captions import QUERIES
from collap_model.synth.structure import SynthError

if TYPE_CHECKING:
    from collap_model.synth.produce import Production

log = logging.getLogger("collap.synth")

MANIFEST = "manifest.jsonl"
_SLACK = 0.05  # seconds a section may overrun `duration` (rounding of the stored times)


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file and line."""


class ManifestSection(BaseModel):
    """One section of a song; keys beyond name/start/end are kept as extra fields."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    name: str = Field(min_length=1)
    start: float = Field(ge=0)
    end: float

    @model_validator(mode="after")
    def _check(self) -> ManifestSection:
        if self.end <= self.start:
            raise ValueError(f"section {self.name!r} must end after it starts")
        return self


class ManifestEntry(BaseModel):
    """One song of a manifest; `audio_path` is `audio` resolved against the manifest folder."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    audio: str = Field(min_length=1)
    caption: str  # a manifest of clips may give `text` instead (_text_as_caption)
    text: str | None = None
    queries: list[str] = Field(default_factory=list)
    sections: list[ManifestSection] | None = None
    duration: float | None = Field(default=None, gt=0)
    seed: int | None = None
    _audio_path: Path = PrivateAttr(default=Path())

    @property
    def audio_path(self) -> Path:
        return self._audio_path

    @model_validator(mode="before")
    @classmethod
    def _text_as_caption(cls, data: Any) -> Any:
        if isinstance(data, dict) and "caption" not in data and isinstance(data.get("text"), str):
            return {**data, "caption": data["text"]}
        return data

    @model_validator(mode="after")
    def _check(self) -> ManifestEntry:
        if not self.caption.strip():
            raise ValueError("caption must not be blank")
        if any(not q.strip() for q in self.queries):
            raise ValueError("queries must not contain blank strings")
        sections = self.sections or []
        for a, b in itertools.pairwise(sections):
            if b.start < a.end - 1e-6:
                raise ValueError(
                    f"sections must be in time order without overlap: {b.name!r} starts at "
                    f"{b.start:g} before {a.name!r} ends at {a.end:g}"
                )
        if self.duration is not None and sections and sections[-1].end > self.duration + _SLACK:
            raise ValueError(
                f"section {sections[-1].name!r} ends at {sections[-1].end:g}, after the "
                f"duration {self.duration:g}"
            )
        return self


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"])
    msg = str(e["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def parse_entry(obj: Any, root: Path) -> ManifestEntry:
    """Validate one decoded manifest object; raises ValueError with the reason."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    try:
        entry = ManifestEntry.model_validate(obj)
    except ValidationError as err:
        raise ValueError(_first_error(err)) from None
    audio = Path(entry.audio).expanduser()
    entry._audio_path = audio if audio.is_absolute() else root / audio
    return entry


def read_manifest(path: str | Path, *, check_audio: bool = True) -> list[ManifestEntry]:
    """Every entry of a manifest, validated; the first problem raises ManifestError naming
    the line ("data/manifest.jsonl line 7: caption: Field required"). With `check_audio`,
    each audio file must exist."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ManifestError(f"cannot read manifest {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text ({err.reason})") from err
    root = path.parent
    entries: list[ManifestEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(
                f"{path} line {number}: not valid JSON ({err.msg} at column {err.colno})"
            ) from None
        try:
            entry = parse_entry(obj, root)
        except ValueError as err:
            raise ManifestError(f"{path} line {number}: {err}") from None
        if check_audio and not entry.audio_path.is_file():
            raise ManifestError(f"{path} line {number}: audio file not found: {entry.audio_path}")
        entries.append(entry)
    if not entries:
        raise ManifestError(f"{path}: the manifest has no entries")
    return entries


def write_manifest(path: Path, entries: Iterable[Mapping[str, object]]) -> None:
    """Write JSON Lines atomically (a temp file renamed over `path`), keys in the given order."""
    lines = [json.dumps(dict(e), ensure_ascii=False) + "\n" for e in entries]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class SynthReport:
    manifest: Path
    songs: int
    audio_seconds: float
    wall_seconds: float
    render_seconds: float  # wall time of the rendering stage alone

    @property
    def speed(self) -> float:
        """Seconds of audio rendered per wall-clock second (whole run)."""
        return self.audio_seconds / max(self.wall_seconds, 1e-9)


def _default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def generate_dataset(
    out: str | Path,
    songs: int,
    seed: int = 0,
    *,
    soundfont: str | Path | Sequence[str | Path] | None = None,
    produce: bool = False,
    phrasings: str | Sequence[str] = "train",
    queries: int = QUERIES,
    min_seconds: float = 30.0,
    max_seconds: float = 300.0,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SynthReport:
    """Plan, write and render `songs` songs into `out` (audio/, midi/, manifest.jsonl).

    Song i uses seed `seed + i`; plans, MIDI files and the manifest depend only on the seed
    and options (not on `jobs`). Rendering runs `jobs` FluidSynth processes at once.
    `soundfont`: one soundfont, or several (each song draws one from its seed); `produce`:
    give every song a production draw (synth/produce.py). `phrasings`: one phrasebook, or
    several (each song draws one from its seed, as with soundfonts).
    `progress(done, total)` is called after each song is rendered.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from collap_model.synth.arrange import arrange
    from collap_model.synth.captions import describe
    from collap_model.synth.phrases import PHRASEBOOKS
    from collap_model.synth.produce import draw_production
    from collap_model.synth.render import find_fluidsynth, render_song, resolve_soundfont
    from collap_model.synth.structure import check_length, plan_song, section_dict

    started = time.perf_counter()
    if songs < 1:
        raise SynthError(f"--songs must be at least 1, got {songs}")
    jobs = _default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise SynthError(f"--jobs must be at least 1, got {jobs}")
    if queries < 1:
        raise SynthError(f"--queries must be at least 1, got {queries}")
    books = [phrasings] if isinstance(phrasings, str) else list(phrasings)
    for book in books or [""]:
        if book not in PHRASEBOOKS:
            raise SynthError(f"unknown phrasings {book!r}; use one of {', '.join(PHRASEBOOKS)}")
    check_length(min_seconds, max_seconds)
    chosen = list(soundfont) if isinstance(soundfont, (list, tuple)) else [soundfont]
    fonts = [resolve_soundfont(f) for f in chosen]  # type: ignore[arg-type]
    if not fonts:
        raise SynthError("give at least one soundfont")
    fluidsynth = find_fluidsynth()
    root = Path(out).expanduser()
    _prepare_output(root)
    log.info("synth: %d songs into %s with %s, %d jobs", songs, root, fonts, jobs)

    width = max(5, len(str(songs - 1)))
    entries: list[dict[str, object]] = []
    tasks: list[tuple[Path, Path, float, Path, Production | None, int]] = []
    for i in range(songs):
        plan = plan_song(seed + i, min_seconds, max_seconds)
        # its own generator: the plan, the audio and one-book sets stay as they were
        book = books[random.Random(f"{plan.seed}:phrasings").randrange(len(books))]
        text = describe(plan, book, queries)
        name = f"{i:0{width}d}"
        midi = root / "midi" / f"{name}.mid"
        flac = root / "audio" / f"{name}.flac"
        midi.write_bytes(arrange(plan))
        duration = round(plan.duration, 3)
        font = fonts[random.Random(f"{plan.seed}:soundfont").randrange(len(fonts))]
        production = draw_production(plan.seed) if produce else None
        tasks.append((midi, flac, plan.duration, font, production, plan.seed))
        extra: dict[str, object] = {"soundfont": font.name}
        if production is not None:
            extra["production"] = production.as_dict()
        entries.append(
            {
                "audio": f"audio/{name}.flac",
                "caption": text.caption,
                "queries": text.queries,
                "timed_queries": [{"text": t, "time": at} for t, at in text.timed],
                "sections": [section_dict(s) for s in plan.sections],
                "duration": duration,
                "seed": plan.seed,
                "midi": f"midi/{name}.mid",
                "style": plan.style,
                "phrasings": book,
                **extra,
            }
        )

    render_started = time.perf_counter()
    audio_seconds = 0.0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        # threads suffice: each one waits on its own FluidSynth process, which does the work
        futures = [
            pool.submit(render_song, m, f, font, s, fluidsynth, prod, seed_)
            for m, f, s, font, prod, seed_ in tasks
        ]
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                audio_seconds += future.result()
                if progress is not None:
                    progress(done, songs)
                log.info("synth: rendered %d/%d", done, songs)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    render_seconds = time.perf_counter() - render_started
    manifest = root / MANIFEST
    write_manifest(manifest, entries)
    wall = time.perf_counter() - started
    return SynthReport(manifest, songs, audio_seconds, wall, render_seconds)


def _prepare_output(root: Path) -> None:
    """Create OUT, OUT/audio and OUT/midi and prove OUT is writable, or raise SynthError."""
    try:
        for folder in (root, root / "audio", root / "midi"):
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        raise SynthError(f"cannot write to {root}: {err.strerror or err}") from err
