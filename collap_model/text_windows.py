"""Text windows and input checks, torch-free: shared by the text encoder (collap_model/
text_encoder.py) and the torch-free query path (collap_model/light.py), so both cut a long text
into the same windows and refuse the same texts."""

from __future__ import annotations

from collections.abc import Sequence

from collap_model.clipping import clip_spans_samples
from collap_model.config import ConfigError


class TextInputError(ValueError):
    """A text the encoder cannot take (empty, or longer than `max_words`)."""


def check_texts(texts: Sequence[str], max_words: int) -> None:
    """TextInputError for the first text that is empty or longer than `max_words` words."""
    for i, text in enumerate(texts):
        if not text or not text.strip():
            raise TextInputError(f"text {i} is empty")
        words = len(text.split())
        if words > max_words:
            raise TextInputError(
                f"text {i} has {words} words; the model takes at most {max_words} (text.max_words)"
            )


def window_spans(n_tokens: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Overlapping [start, end) windows of at most `size` tokens covering `n_tokens` tokens
    (the clip rule: a regular grid plus one window aligned to the end)."""
    return clip_spans_samples(n_tokens, size, stride) or [(0, 0)]


def window_owners(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """For each window, the token range it contributes: split each overlap at its middle."""
    owned = []
    for i, (s, e) in enumerate(spans):
        lo = s if i == 0 else (s + spans[i - 1][1]) // 2
        hi = e if i == len(spans) - 1 else (spans[i + 1][0] + e) // 2
        owned.append((lo, hi))
    return owned


def special_tokens(tokenizer: object) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text ([CLS] ... [SEP] for BERT)."""
    plain: list[int] = tokenizer("music", add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    full: list[int] = tokenizer("music")["input_ids"]  # type: ignore[operator]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i], full[i + len(plain) :]
    raise ConfigError("cannot tell the text backbone's special tokens apart from the text")
