"""`collap convert-musicnn`: musicnn's TF1 checkpoints -> safetensors of our `Musicnn` module.

The source is the `musicnn==0.1.0` wheel (`pip download --no-deps musicnn==0.1.0`) or a folder
it was unpacked to. Its dependencies (TensorFlow, an old numpy) are never installed: the
checkpoints are read by tf_bundle.py. Adam's slots and the step counters are dropped.

Output, one folder (the package ships it as collap_model/weights/musicnn/):
    MTT_musicnn.safetensors, MSD_musicnn.safetensors   weights; metadata: labels, source sha256
    LICENSE.md                                         musicnn's ISC notice, which must travel
                                                       with the weights
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from collap_model.tagger.labels import LABELS
from collap_model.tagger.tf_bundle import BundleError, read_bundle

MODELS = tuple(LABELS)
LICENSE_FILE = "LICENSE.md"
_LICENSE_IN_WHEEL = "musicnn-0.1.0.dist-info/LICENSE.md"
_BUNDLE_FILES = (".index", ".data-00000-of-00001")


def _tf_names() -> dict[str, tuple[str, str]]:
    """Our module path -> (TF layer name, its kind: conv2d | conv1d | bn | dense)."""
    names: dict[str, tuple[str, str]] = {"input_bn": ("batch_normalization", "bn")}
    blocks = [f"timbral.{i}" for i in range(2)] + [f"temporal.{i}" for i in range(3)]
    for i, block in enumerate(blocks):
        names[f"{block}.conv"] = ("conv2d" if i == 0 else f"conv2d_{i}", "conv2d")
        names[f"{block}.bn"] = (f"batch_normalization_{i + 1}", "bn")
    for i in range(3):
        names[f"midend.{i}.conv"] = (f"conv2d_{i + 5}", "conv1d")
        names[f"midend.{i}.bn"] = (f"batch_normalization_{i + 6}", "bn")
    names["pool_bn"] = ("batch_normalization_9", "bn")
    names["dense"] = ("dense", "dense")
    names["dense_bn"] = ("batch_normalization_10", "bn")
    names["out"] = ("dense_1", "dense")
    return names


def state_dict_of(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A musicnn checkpoint's tensors (TF names) -> `Musicnn` state dict (float32 arrays)."""
    out: dict[str, np.ndarray] = {}
    for ours, (tf, kind) in _tf_names().items():
        try:
            match kind:
                case "bn":
                    for a, b in (("gamma", "gamma"), ("beta", "beta"), ("mean", "moving_mean"),
                                 ("var", "moving_variance")):  # fmt: skip
                        out[f"{ours}.{a}"] = tensors[f"{tf}/{b}"]
                case "conv2d":  # TF (H, W, in, out) -> torch (out, in, H, W)
                    out[f"{ours}.weight"] = tensors[f"{tf}/kernel"].transpose(3, 2, 0, 1)
                    out[f"{ours}.bias"] = tensors[f"{tf}/bias"]
                case "conv1d":  # a (7, C, 1, out) conv over (time, all C) -> Conv1d (out, C, 7)
                    out[f"{ours}.weight"] = tensors[f"{tf}/kernel"][:, :, 0, :].transpose(2, 1, 0)
                    out[f"{ours}.bias"] = tensors[f"{tf}/bias"]
                case "dense":  # TF (in, out) -> torch (out, in)
                    out[f"{ours}.weight"] = tensors[f"{tf}/kernel"].T
                    out[f"{ours}.bias"] = tensors[f"{tf}/bias"]
        except KeyError as err:
            raise BundleError(f"not a musicnn checkpoint: no variable {err.args[0]}") from None
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def convert(source: Path, out: Path) -> list[Path]:
    """Convert both musicnn checkpoints of `source` (the wheel, or a folder holding its
    `musicnn/` package) into `out`; returns the files written."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="musicnn-") as tmp:
        root, digest = _unpack(source, Path(tmp))
        for name in MODELS:
            # the bundle files are named ".index" and ".data-..." inside the model's folder
            state = state_dict_of(read_bundle(f"{root / 'musicnn' / name}/"))
            meta = {"labels": json.dumps(list(LABELS[name])), "source_sha256": digest,
                    "source": "musicnn 0.1.0 (PyPI), ISC licence"}  # fmt: skip
            target = out / f"{name}.safetensors"
            save_file(state, str(target), metadata=meta)
            written.append(target)
        notice = _license_text(root)
    license_path = out / LICENSE_FILE
    license_path.write_text(
        "The weights in MTT_musicnn.safetensors and MSD_musicnn.safetensors were converted from\n"
        "the checkpoints of musicnn 0.1.0 (https://github.com/jordipons/musicnn, PyPI `musicnn`)\n"
        "by `collap convert-musicnn`, and are distributed under musicnn's licence:\n\n" + notice
    )
    written.append(license_path)
    return written


def _unpack(source: Path, tmp: Path) -> tuple[Path, str]:
    """A folder holding `musicnn/<model>/` bundles, and the sha256 of the source."""
    if source.is_dir():
        if not (source / "musicnn").is_dir():
            raise BundleError(f"{source} holds no musicnn/ package (unpack the wheel there)")
        return source, "unpacked folder"
    try:
        data = source.read_bytes()
        archive = zipfile.ZipFile(source)
    except (OSError, zipfile.BadZipFile) as err:
        raise BundleError(f"{source} is neither a folder nor a readable wheel: {err}") from err
    with archive:
        wanted = [f"musicnn/{m}/{f}" for m in MODELS for f in _BUNDLE_FILES]
        wanted.append(_LICENSE_IN_WHEEL)
        missing = [w for w in wanted if w not in archive.namelist()]
        if missing:
            raise BundleError(f"{source} is not the musicnn 0.1.0 wheel (no {missing[0]})")
        for member in wanted:
            archive.extract(member, tmp)
    (tmp / "musicnn" / "LICENSE.md").write_bytes((tmp / _LICENSE_IN_WHEEL).read_bytes())
    return tmp, hashlib.sha256(data).hexdigest()


def _license_text(root: Path) -> str:
    for candidate in (root / "musicnn" / "LICENSE.md", *root.glob("musicnn-*.dist-info/LICENSE*")):
        if candidate.is_file():
            return candidate.read_text()
    raise BundleError(f"no musicnn licence notice found under {root}")
