"""Rendering: MIDI -> FluidSynth (fast render, 16 kHz) -> mono float -> FLAC via PyAV.

With a production draw (produce.py), FluidSynth's reverb and chorus follow the draw and the
stereo render goes through its EQ, compression, width, noise and level before the downmix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from collap_model.synth.structure import SynthError

if TYPE_CHECKING:
    import numpy as np

    from collap_model.synth.produce import Production

SAMPLE_RATE = 16_000
# Debian's fluid-soundfont-gm (145 MB, better for training), then timgm6mb-soundfont (6 MB)
SOUNDFONTS = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
)
# the General MIDI soundfonts Debian packages, by the short names `collap synth` accepts
# (the first file of a name that is installed)
NAMED_SOUNDFONTS = {
    "timgm6mb": (Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),),  # timgm6mb-soundfont
    "fluidr3": (Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),),  # fluid-soundfont-gm
    "musescore": (
        # musescore-general-soundfont-lossless: samples stored plain, so FluidSynth loads it
        # in about a second where the compressed .sf3 of the -small package takes ten
        Path("/usr/share/sounds/sf2/MuseScore_General_Full.sf2"),
        Path("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"),
    ),
}
PEAK = 0.89  # -1 dBFS: every song is normalised to the same peak, like mastered music
GAIN = 0.6  # FluidSynth master gain; the float output is normalised afterwards anyway


def find_fluidsynth() -> str:
    """The fluidsynth executable on PATH."""
    path = shutil.which("fluidsynth")
    if path is None:
        raise SynthError(
            "fluidsynth is not installed (not on PATH); install it, e.g. apt-get install fluidsynth"
        )
    return path


def resolve_soundfont(path: str | Path | None = None) -> Path:
    """`path` (or a name of NAMED_SOUNDFONTS) if given, else FluidR3_GM if installed, else
    TimGM6mb; checked to be a SoundFont (.sf2, or .sf3 with compressed samples)."""
    if isinstance(path, str) and path in NAMED_SOUNDFONTS:
        candidates = NAMED_SOUNDFONTS[path]
        path = next((p for p in candidates if p.is_file()), candidates[-1])
    if path is None:
        found = next((p for p in SOUNDFONTS if p.is_file()), None)
        if found is None:
            raise SynthError(
                "no General MIDI soundfont found (looked for "
                + ", ".join(str(p) for p in SOUNDFONTS)
                + "); install fluid-soundfont-gm or timgm6mb-soundfont, or pass --soundfont"
            )
        path = found
    sf = Path(path).expanduser()
    try:
        with sf.open("rb") as f:
            head = f.read(12)
    except OSError as err:
        raise SynthError(f"cannot read soundfont {sf}: {err.strerror or err}") from err
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise SynthError(f"{sf} is not a SoundFont file (.sf2 or .sf3)")
    return sf


def render_midi(
    midi: Path,
    soundfont: Path,
    seconds: float,
    fluidsynth: str,
    production: Production | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Mono float32 audio at SAMPLE_RATE, exactly round(seconds * SAMPLE_RATE) samples long,
    peak-normalised (or produced, peaking at the draw's level). FluidSynth keeps rendering
    release tails past the end; they are cut."""
    import numpy as np

    effects = [] if production is None else production.fluidsynth_options()
    with tempfile.TemporaryDirectory(prefix="collap-synth-") as tmp:
        raw = Path(tmp) / "song.raw"
        # raw little-endian float32 stereo: no clipping inside FluidSynth, no WAV parsing here
        cmd = [
            fluidsynth,
            "-n",
            "-i",
            "-q",
            "-g",
            str(GAIN),
            "-r",
            str(SAMPLE_RATE),
            "-T",
            "raw",
            "-O",
            "float",
            "-E",
            "little",
            *effects,
            "-F",
            str(raw),
            str(soundfont),
            str(midi),
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as err:
            raise SynthError(f"cannot run {fluidsynth}: {err.strerror or err}") from err
        if done.returncode != 0 or not raw.is_file():
            detail = (done.stderr or done.stdout).strip().splitlines()
            reason = detail[-1] if detail else f"exit status {done.returncode}"
            raise SynthError(f"fluidsynth failed on {midi.name}: {reason}")
        stereo = np.fromfile(raw, dtype="<f4").reshape(-1, 2)
    n = round(seconds * SAMPLE_RATE)
    stereo = stereo[:n] if len(stereo) >= n else np.pad(stereo, ((0, n - len(stereo)), (0, 0)))
    wave = stereo.mean(axis=1)
    if n == 0 or float(np.abs(wave).max()) == 0.0:
        raise SynthError(f"fluidsynth rendered silence for {midi.name} (soundfont {soundfont})")
    if production is not None:
        from collap_model.synth.produce import apply_production

        return apply_production(stereo, SAMPLE_RATE, production, seed)
    return (wave * (PEAK / float(np.abs(wave).max()))).astype(np.float32)


def write_flac(path: Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Mono float samples in [-1, 1] -> 16-bit FLAC, written atomically (temp file + rename)."""
    import av
    import numpy as np

    pcm = np.clip(np.round(wave * 32767.0), -32768, 32767).astype(np.int16)[None, :]
    tmp = path.with_name(f".{path.name}.tmp")
    with av.open(str(tmp), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    os.replace(tmp, path)


def render_song(
    midi: Path,
    flac: Path,
    soundfont: Path,
    seconds: float,
    fluidsynth: str,
    production: Production | None = None,
    seed: int = 0,
) -> float:
    """Render one MIDI file to FLAC; returns the audio seconds written."""
    wave = render_midi(midi, soundfont, seconds, fluidsynth, production, seed)
    write_flac(flac, wave)
    return len(wave) / SAMPLE_RATE
