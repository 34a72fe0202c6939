"""Real recorded music that Debian ships: the game-music packages, found on this machine.

About 22 hours in some 390 tracks (`apt-get install` the packages in PACKAGES). Each package is
searched below its files for audio in the folders that hold its music (sound effects live
beside the music in some of them, and are short, so tracks under `min_seconds` are dropped):
- plain files: Ogg Vorbis, Opus, MP3, FLAC, WAV;
- `.pk3` archives (zip files of game data: ufoai, nexuiz): their audio members are extracted
  into the output folder; the rest of an archive is not audio and is skipped;
- Frets on Fire songs, a folder per song with separate stems (song.ogg, guitar.ogg, rhythm.ogg):
  the stems are mixed into one track.
Licences are the packages' (see /usr/share/doc/<package>/copyright); nothing here is shipped.
"""

from __future__ import annotations

import logging
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("collap.recordings")

AUDIO_SUFFIXES = frozenset({".ogg", ".oga", ".opus", ".mp3", ".flac", ".wav"})
# package -> path fragments of its music folders ("" = all of its audio)
PACKAGES: dict[str, tuple[str, ...]] = {
    "warzone2100-music": ("",),
    "ufoai-music": ("",),
    "planetblupi-music-ogg": ("",),
    "wesnoth-1.16-music": ("",),
    "hedgewars-data": ("/Music/",),
    "nexuiz-music": ("",),
    "colobot-common-sounds": ("/music/",),
    "singularity-music": ("",),
    "supertuxkart-data": ("/data/music/",),
    "drascula-music": ("",),
    "pushover-data": ("/themes/",),
    "openclonk-data": ("/Music.ocg/",),
    "hyperrogue-music": ("",),
    "asc-music": ("",),
    "fretsonfire-songs-muldjord": ("/songs/",),
    "fretsonfire-songs-sectoid": ("/songs/",),
    "frozen-bubble-data": ("zik",),
}
_STEMS = ("song.ogg", "guitar.ogg", "rhythm.ogg")


@dataclass(frozen=True)
class Recording:
    path: Path  # a file any decoder here reads (extracted or mixed ones live under `out`)
    package: str
    title: str


def installed_files(package: str) -> list[Path]:
    """Files of an installed Debian package (`dpkg -L`); [] when it is not installed."""
    try:
        done = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    except OSError:
        return []
    if done.returncode != 0:
        return []
    return [Path(line) for line in done.stdout.splitlines() if line.startswith("/")]


def find_recordings(
    out: Path, packages: dict[str, tuple[str, ...]] | None = None
) -> list[Recording]:
    """Every music track of the installed packages (see the module doc), in a stable order;
    archive members and mixed stems are written below `out` (once; reused when present)."""
    found: list[Recording] = []
    for package, folders in (packages or PACKAGES).items():
        files = [f for f in installed_files(package) if any(x in str(f) for x in folders)]
        if not files:
            log.info("recordings: %s is not installed", package)
            continue
        found.extend(_from_package(package, sorted(files), out))
    return found


def _from_package(package: str, files: list[Path], out: Path) -> Iterator[Recording]:
    stem_dirs = sorted({f.parent for f in files if f.name in _STEMS})
    for folder in stem_dirs:
        mixed = _mix_stems(folder, out / package / f"{folder.name}.flac")
        if mixed is not None:
            yield Recording(mixed, package, folder.name)
    for f in files:
        if f.parent in stem_dirs or not f.is_file():
            continue
        if f.suffix.lower() in AUDIO_SUFFIXES:
            yield Recording(f, package, f.stem)
        elif f.suffix.lower() == ".pk3":
            yield from _from_archive(f, package, out / package)


def _from_archive(archive: Path, package: str, out: Path) -> Iterator[Recording]:
    try:
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.namelist() if Path(m).suffix.lower() in AUDIO_SUFFIXES]
            for member in sorted(members):
                target = out / archive.stem / member
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(member))
                yield Recording(target, package, Path(member).stem)
    except (zipfile.BadZipFile, OSError) as err:
        log.warning("recordings: skipping %s: %s", archive, err)


def _mix_stems(folder: Path, target: Path) -> Path | None:
    """The sum of a Frets on Fire song's stems, peak-normalised, as FLAC at 44.1 kHz."""
    if target.exists():
        return target
    from collap_model.audio_io import AudioReadError, read_audio
    from collap_model.synth.render import write_flac

    rate = 44_100
    waves = []
    for name in _STEMS:
        stem = folder / name
        if stem.is_file():
            try:
                waves.append(read_audio(stem, rate))
            except AudioReadError as err:
                log.warning("recordings: %s", err)
    if not waves:
        return None
    n = max(len(w) for w in waves)
    mix = np.sum([np.pad(w, (0, n - len(w))) for w in waves], axis=0)
    peak = float(np.abs(mix).max()) or 1.0
    target.parent.mkdir(parents=True, exist_ok=True)
    write_flac(target, (0.89 * mix / peak).astype(np.float32), rate)
    return target
