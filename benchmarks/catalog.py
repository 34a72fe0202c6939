"""A real catalog: Debian's game-music packages, indexed as a new user would, beside decode-only.

The recorded soundtracks Debian ships (Opus, Vorbis; some catalogs also hold `.pk3` zip
archives, which are not audio and must be passed over without a failure). Each installed
package's folders are indexed in place into a fresh embedded store by `indexer index`'s own
code path with the default model; decode-only is the same decoder (PyAV, libsndfile where
FFmpeg refuses a file) over the same files in one process. Packages that are not installed
are named and left out.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from collap_model import load_model
from indexer import service
from indexer.decode import AudioDecoder, DecodeError
from indexer.pipeline import ModelHandle
from indexer.printable import printable
from indexer.scan import scan
from indexer.settings import Settings

PACKAGES = (
    "hyperrogue-music",
    "wesnoth-1.16-music",
    "warzone2100-music",
    "singularity-music",
    "drascula-music",
    "planetblupi-music-ogg",
    "ufoai-music",
    "nexuiz-music",
)
# what a package's file list is searched for: audio, and the archives some games pack it in
_LISTED = (".ogg", ".opus", ".mp3", ".flac", ".wav", ".pk3")
_SHOWN = 10  # failed files named in the report


def package_folders(package: str) -> list[Path]:
    """The folders holding a package's audio files (and archives), or [] if not installed."""
    out = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True)
    if out.returncode != 0:
        return []
    folders = {
        Path(line).parent for line in out.stdout.splitlines() if line.lower().endswith(_LISTED)
    }
    return sorted(f for f in folders if not any(p in folders for p in f.parents))


def decode_only(files: list[str], rate: int) -> tuple[float, float, int]:
    """(wall s, audio s, files libsndfile read) for decoding `files` in one process."""
    audio, by_sndfile = 0.0, 0
    start = time.perf_counter()
    for path in files:
        try:
            with AudioDecoder(path, rate) as dec:
                audio += sum(c.size for c in dec.chunks()) / rate
                by_sndfile += "FFmpeg" in dec.said
        except DecodeError:
            pass
    return time.perf_counter() - start, audio, by_sndfile


def run() -> str:
    model = load_model(device="cpu")
    folders = {p: package_folders(p) for p in PACKAGES}
    installed = {p: f for p, f in folders.items() if f}
    missing = [p for p, f in folders.items() if not f]
    roots = [f for fs in installed.values() for f in fs]
    if not roots:
        raise SystemExit(f"none of {', '.join(PACKAGES)} is installed (apt-get install them)")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    files = [f.path for f in scan(roots, settings.extensions)]
    archives = sum(1 for r in roots for p in r.rglob("*.pk3"))
    size = sum(os.path.getsize(f) for f in files)
    decode_s, audio_s, by_sndfile = decode_only(files, model.sample_rate)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", _env_file=None)  # type: ignore[call-arg]
        summary = service.index(settings, roots, model=ModelHandle(settings, model=model))
        failed = service.list_failures(settings)
        reasons = Counter(f.reason for f in failed)
        tracks = service.status(settings)["tracks"]
    per_package = "\n".join(
        f"| {p} | {sum(1 for f in files if any(f.startswith(f'{r}/') for r in fs))} |"
        for p, fs in installed.items()
    )
    failures = "\n".join(f"| {n} | {why} |" for why, n in reasons.most_common()) or "| 0 | - |"
    shown = ", ".join(f"`{printable(f.path)}`" for f in failed[:_SHOWN])
    decode_rate = audio_s / decode_s
    # over the catalog's audio, duplicates included (the run hashes them and embeds them once)
    e2e_rate = audio_s / summary.seconds
    return f"""## A real catalog: Debian's game music (issue 17)

`python -m benchmarks.run catalog`: the installed packages' audio folders indexed in place by
`indexer index`'s code path into a fresh embedded store, model {model.fingerprint} on CPU,
{settings.decode_workers} decoder process(es); decode-only is the same decoder in one process.
Not installed, left out: {", ".join(missing) or "none"}.

| package | audio files |
|---|---|
{per_package}

{len(files)} audio files, {size / 1e9:.2f} GB, {audio_s / 3600:.1f} h decoded;
{archives} `.pk3` archive(s) beside them, passed over (not audio). {by_sndfile} file(s) FFmpeg
refused were read by libsndfile.

| run | |
|---|---|
| files indexed | {summary.indexed} |
| distinct tracks (a content at several paths is one track) | {tracks} |
| failures | {summary.failed} |
| wall time of the run | {summary.seconds:.0f} s |
| audio embedded (distinct content) | {summary.audio_seconds / 3600:.1f} h |
| decode-only: catalog audio s / wall s | {decode_rate:.0f} |
| end-to-end: catalog audio s / wall s | {e2e_rate:.0f} |
| **ratio end-to-end / decode-only** | **{e2e_rate / decode_rate:.2f}** |

Failures by reason:

| files | reason |
|---|---|
{failures}

Failed files{" (the first " + str(_SHOWN) + ")" if len(failed) > _SHOWN else ""}: {shown or "none"}.
"""
