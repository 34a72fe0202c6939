from __future__ import annotations

import torch

from collap_model import load_model
from collap_model.frontend import clip_spans, clip_times, cut_clips
from collap_model.model import TrainingBatch
from tests.conftest import tone


def test_tiny_training_run_overfits_a_handful_of_pairs() -> None:
    torch.manual_seed(0)
    model = load_model("collap-mini", device="cpu")
    model.train()
    fe = model.config.frontend
    songs = [tone(s, f) for s, f in [(12.0, 110.0), (25.0, 440.0), (8.0, 1760.0), (18.0, 3000.0)]]
    texts = [
        "a deep low drone",
        "a bright middle tone",
        "a very high whistle",
        "a piercing shrill beep",
    ]
    feats, masks, times, counts = [], [], [], []
    for wave in songs:
        spans = clip_spans(wave.shape[0], fe)
        clips, valid = cut_clips(wave, spans, fe.clip_samples)
        f, m = model.audio_encoder.features(clips, valid)
        feats.append(f)
        masks.append(m)
        times.append(clip_times(spans, fe.sample_rate))
        counts.append(len(spans))
    batch = TrainingBatch(texts, torch.cat(feats), torch.cat(masks), torch.cat(times), counts)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(40):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.3 * losses[0], losses
    model.eval()
    with torch.no_grad():
        final = model(batch)
    assert torch.equal(final.fusion_logits.argmax(dim=1), torch.arange(4))
