"""The small artifacts committed under artifacts/ match conf/artifacts/tiny.yaml and load.

Building the tiny default's artifacts takes longer on 2 CPU cores than the main job's time
goal, so they ship with the repository (a few MB, with the record of the spec and code
version that made them). If this fails after a change of a spec or of an artifact kind's
version, rebuild and commit them:

    python -m suite prepare --config conf/prepare.yaml
    git add -f artifacts/<kind>-<hash>/{model.pt,record.json,metrics.json}
"""

from __future__ import annotations

import pytest
import torch

from lightning_modules.artifacts import JOBS, MODEL_FILE
from suite import audio_eval
from suite.artifacts import artifact_dir, default_root, read_record
from suite.models.lm_checkpoint import load_lm
from suite.models.preference import PreferenceModel
from suite.models.scorer import MuLanScorer
from suite.models.vit import AudioEmbedder
from suite.music.render import AUDIO_SAMPLES
from suite.music.tokens import SEQ_LEN, VOCAB_SIZE


def tiny_specs() -> dict:
    return audio_eval.default_specs()  # composed as `python -m suite prepare` composes them


@pytest.mark.parametrize("kind", ["base_lm", "embedder", "scorer", "preference"])
def test_committed_artifact_matches_its_spec_and_loads(kind):
    spec = tiny_specs()[kind]
    folder = artifact_dir(kind, JOBS[kind][3], spec, default_root())
    record = read_record(folder)
    assert record is not None, (
        f"no committed {kind} artifact at {folder}: see this file's docstring"
    )
    assert record["version"] == JOBS[kind][3] and record["config"] == spec
    path = folder / MODEL_FILE
    if kind == "base_lm":
        model = load_lm(path)
        assert (model.config["vocab_size"], model.config["seq_len"]) == (VOCAB_SIZE, SEQ_LEN)
        logits = model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 384))
        assert logits.shape == (1, 4, VOCAB_SIZE) and torch.isfinite(logits).all()
        return
    audio = 0.1 * torch.randn(2, AUDIO_SAMPLES, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if kind == "embedder":
            out = AudioEmbedder.from_checkpoint(path)(audio)
            assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-4)
        elif kind == "preference":
            out = PreferenceModel.from_checkpoint(path).score(audio)
        else:
            scorer = MuLanScorer.from_checkpoint(path)
            out = scorer.score_embeddings(
                audio, torch.nn.functional.normalize(torch.randn(2, 384), dim=-1)
            )
    assert torch.isfinite(out).all()
