"""The preference judge's pairs of base-model generations labelled by the oracle
(`datamodules.generations`, issue 18: the learned judges against the oracle)."""

from __future__ import annotations

import zlib

import lightning as L
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from datamodules.generations import GenerationPairsDataModule, draw_pairs
from lightning_modules.artifacts import GENERATION_DATA, JOBS, _data_kwargs, _data_target
from lightning_modules.preference import PreferenceJob
from suite.judge_diagnostics import SWEEP
from suite.models.lm import TokenLM
from suite.music import tokens as T
from suite.music.oracle_judge import judge_batch
from suite.policies.music import MusicPolicy

PROMPTS = ["Rock song.", "Upbeat jazz piece in C major.", "A sad piano ballad", "Calm ambient pad",
           "Funky bass groove", "Heavy metal riff"]  # fmt: skip
ENC = {"mel": {"n_mels": 32}, "vit": {"patch_freq": 8, "patch_time": 16, "width": 16, "depth": 1,
                                      "heads": 2, "head_dim": 8, "ff_dim": 32}}  # fmt: skip


class _CleanLeaning(MusicPolicy):
    """A random tiny LM that leans towards clean, well-played steps (logit +5 on that perf
    token), so its generations span the oracle's quality scale (a plain random LM's are ~0)."""

    def _lean(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.index_add(-1, torch.tensor([T.TYPE_RANGES["perf"][0]]),
                                torch.full((*logits.shape[:-1], 1), 5.0))  # fmt: skip

    def start(self, cond):
        state, logits = super().start(cond)
        return state, self._lean(logits)

    def step(self, prev, state):
        return self._lean(super().step(prev, state))


def _policy() -> MusicPolicy:
    torch.manual_seed(0)
    lm = TokenLM(T.VOCAB_SIZE, T.SEQ_LEN, d_model=32, n_layers=1, n_heads=2, d_ff=64, n_prefix=2)

    def encode(prompts):  # a fixed random vector per prompt ("" is the null condition)
        return torch.stack([torch.randn(384, generator=torch.Generator().manual_seed(zlib.crc32(p.encode())))
                            * bool(p) for p in prompts])  # fmt: skip

    return _CleanLeaning(lm, encode=encode)


def short_render(tokens):  # 1 s of a token-dependent tone: cheap, and differs between pieces
    t = torch.arange(16000) / 16000
    f = 100.0 + 10.0 * (tokens[:, T.HEADER_LEN :].float().mean(1, keepdim=True) % 50)
    return 0.5 * torch.sin(2 * torch.pi * f * t)


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    prompts = tmp_path_factory.mktemp("gp") / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    dm = GenerationPairsDataModule(prompts=str(prompts), per_prompt=2, seeds=[7], val_prompts=2,
                                   margin=0.05, train_pairs=64, val_pairs=16, batch_size=4,
                                   policy=_policy(), render=short_render)  # fmt: skip
    dm.setup("fit")
    return dm


def test_generations_are_the_sweep_judged_by_the_oracle(datamodule):
    tokens, quality = datamodule.generate(PROMPTS)
    assert tokens.shape == (len(SWEEP) * len(PROMPTS) * 2, T.SEQ_LEN)
    rows = [p for _ in SWEEP for p in PROMPTS for _ in range(2)]  # (condition, prompt, draw)
    expected = [j.quality for j in judge_batch(tokens, rows)]
    np.testing.assert_allclose(quality.numpy(), expected, rtol=1e-6)
    assert quality.std() > 0  # a random LM's generations differ in quality


def test_pairs_prefer_the_better_generation_by_the_margin_and_hold_out_prompts(datamodule):
    for split in ("train", "val"):
        s = datamodule._sets[split]
        w, lo = s.quality[s.pairs[:, 0]], s.quality[s.pairs[:, 1]]
        assert (w - lo >= 0.05).all()
    tokens, _ = datamodule.generate(PROMPTS)
    prompt_of = (torch.arange(len(tokens)) // 2) % len(PROMPTS)
    val_rows = {tuple(r.tolist()) for r in datamodule._sets["val"].tokens}
    train_rows = {tuple(r.tolist()) for r in datamodule._sets["train"].tokens}
    held = {int(p) for r, p in zip(tokens, prompt_of) if tuple(r.tolist()) in val_rows}
    assert len(held) == 2 and not val_rows & train_rows  # two whole prompts held out


def test_draw_pairs_refuses_what_the_margin_rules_out():
    q = torch.tensor([0.5, 0.52, 0.51, 0.9])
    pairs = draw_pairs(q, 50, 0.1, torch.Generator().manual_seed(0))
    assert ((q[pairs[:, 0]] - q[pairs[:, 1]]) >= 0.1).all() and (pairs[:, 0] == 3).all()
    with pytest.raises(ValueError, match="margin 0.1"):
        draw_pairs(torch.full((5,), 0.5), 10, 0.1, torch.Generator().manual_seed(0))


def test_preference_job_fits_and_logs_spearman_against_the_oracle(datamodule):
    job = PreferenceJob(model_config={"encoder": ENC, "hidden": 8}, max_steps=2)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, val_check_interval=2, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(job, datamodule)
    logged = float(trainer.callback_metrics["val/spearman_oracle_quality"])
    # the same number from the model's scores of every held-out pair, computed here
    s = datamodule._sets["val"]
    with torch.no_grad():
        job.model.eval()
        scores = torch.cat([torch.cat([job.model(short_render(s.tokens[p[:, 0]])),
                                       job.model(short_render(s.tokens[p[:, 1]]))])
                            for p in s.pairs.split(4)])  # fmt: skip
    quality = torch.cat([torch.cat([s.quality[p[:, 0]], s.quality[p[:, 1]]]) for p in s.pairs.split(4)])
    assert logged == pytest.approx(spearmanr(scores.numpy(), quality.numpy()).statistic, abs=1e-5)


def test_a_preference_spec_with_a_base_lm_trains_on_generations():
    spec = {"data": {"base_lm": {"seed": 0}, "batch_size": 8}}
    assert _data_target("preference", spec) == GENERATION_DATA
    assert _data_kwargs("preference", spec) == {"base_lm": {"seed": 0}, "batch_size": 8}
    corpus = {"data": {"n_pieces": 10}}
    assert _data_target("preference", corpus) == JOBS["preference"][1]
    assert _data_kwargs("preference", corpus) == {"task": "preference", "n_pieces": 10}


@pytest.mark.parametrize("kwargs, match", [
    ({}, "needs base_lm"),
    ({"base_lm": "x.pt", "margin": 1.5}, "margin must be in"),
    ({"base_lm": "x.pt", "seeds": []}, "at least one seed"),
])  # fmt: skip
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GenerationPairsDataModule(**kwargs)


def test_a_missing_prompt_file_is_named(tmp_path):
    dm = GenerationPairsDataModule(prompts=str(tmp_path / "nope.txt"), policy=_policy())
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        dm.setup("fit")
