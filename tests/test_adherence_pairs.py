"""The scorer's generation stage: adherence pairs of base-model generations labelled by the
oracle (`datamodules.adherence_pairs`), the Bradley-Terry loss on the scorer's cosines
(`MuLanScorer.pair_loss`) and the generation cache shared with the preference pairs
(`GenerationPairsDataModule.judged_generations`); issue 18."""

from __future__ import annotations

import zlib
from itertools import combinations

import lightning as L
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from datamodules.adherence_pairs import AdherencePairsDataModule, draw_same_prompt_pairs
from lightning_modules.artifacts import ADHERENCE_DATA, JOBS, TRUNK_DATA, _data_kwargs, _data_target
from lightning_modules.scorer import ScorerJob
from suite.judge_diagnostics import SWEEP
from suite.models.scorer import MuLanScorer, ScorerConfig
from suite.music import tokens as T
from suite.music.oracle_judge import judge_batch
from suite.music.oracle_prompt import parse_prompt
from tests.test_generation_pairs import ENC, _policy, short_render

# "Funky bass groove" names nothing the oracle recognises: its generations have no adherence
PROMPTS = ["Rock song.", "Upbeat jazz piece in C major.", "A sad piano ballad", "Calm ambient pad",
           "Funky bass groove", "Heavy metal riff", "Slow blues in E minor."]  # fmt: skip
UNJUDGED = PROMPTS.index("Funky bass groove")
MODEL = {"encoder": ENC, "text_hidden": 16, "joint_dim": 8}


class _Tower:  # a fixed random vector per prompt, as the test policy's encoder
    def encode(self, prompts):
        return torch.stack([torch.randn(384, generator=torch.Generator().manual_seed(zlib.crc32(p.encode())))
                            for p in prompts])  # fmt: skip


def _datamodule(prompt_file, **kwargs) -> AdherencePairsDataModule:
    args = dict(prompts=str(prompt_file), per_prompt=3, seeds=[7], val_prompts=2, margin=0.05,
                train_pairs=60, val_pairs=16, batch_size=4, policy=_policy(), render=short_render,
                text_tower=_Tower())  # fmt: skip
    return AdherencePairsDataModule(**{**args, **kwargs})


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ap") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


@pytest.fixture(scope="module")
def datamodule(prompt_file):
    dm = _datamodule(prompt_file)
    dm.setup("fit")
    return dm


def test_generations_carry_the_oracles_adherence_to_their_own_prompt(datamodule):
    tokens, judged = datamodule.judged_generations(PROMPTS)
    rows = [p for _ in SWEEP for p in PROMPTS for _ in range(3)]  # (condition, prompt, draw)
    expected = [j.adherence_mean if j.adherence else np.nan
                for j in judge_batch(tokens, [parse_prompt(p) for p in rows])]  # fmt: skip
    np.testing.assert_allclose(judged["adherence"].numpy(), expected, rtol=1e-6)
    assert np.isnan(expected).sum() == 3 * len(SWEEP)  # exactly the unjudged prompt's rows


def test_pairs_order_by_adherence_hold_out_whole_prompts_and_skip_the_unjudged(datamodule):
    seen = {}
    for split in ("train", "val"):
        s = datamodule._sets[split]
        w, lo = s.adherence[s.pairs[:, 0]], s.adherence[s.pairs[:, 1]]
        assert (w - lo >= 0.05).all()
        seen[split] = set(s.prompt.tolist())
        assert UNJUDGED not in seen[split]
        assert torch.isfinite(s.adherence).all()
        same = (s.prompt[s.pairs[:, 0]] == s.prompt[s.pairs[:, 1]]).sum()
        assert same >= round(len(s.pairs) * 0.5)  # the same-prompt share (random pairs may add)
    assert len(seen["val"]) == 2 and not seen["val"] & seen["train"]
    assert seen["val"] | seen["train"] == set(range(len(PROMPTS))) - {UNJUDGED}


def test_same_prompt_pairs_are_uniform_over_the_allowed_pairs():
    value = torch.tensor([0.1, 0.5, 0.9, 0.2, 0.2, 0.8])
    prompt = torch.tensor([0, 0, 0, 1, 1, 1])
    allowed = {(i, j) for i, j in combinations(range(6), 2) if prompt[i] == prompt[j]}
    allowed = {(i, j) if value[i] > value[j] else (j, i) for i, j in allowed if abs(value[i] - value[j]) >= 0.3}
    assert allowed == {(1, 0), (2, 0), (2, 1), (5, 3), (5, 4)}
    pairs = draw_same_prompt_pairs(value, prompt, 20_000, 0.3, torch.Generator().manual_seed(0))
    counts = {p: 0 for p in allowed}
    for p in map(tuple, pairs.tolist()):
        counts[p] += 1  # a KeyError would be a pair outside the allowed set
    np.testing.assert_allclose(np.array(list(counts.values())) / 20_000, 1 / len(allowed), atol=0.015)
    with pytest.raises(ValueError, match="margin 0.9"):
        draw_same_prompt_pairs(value, prompt, 5, 0.9, torch.Generator().manual_seed(0))


def test_pair_loss_is_bradley_terry_on_the_scaled_cosines():
    torch.manual_seed(0)
    model = MuLanScorer(ScorerConfig.from_dict(MODEL)).eval()
    audio = short_render(torch.randint(0, T.VOCAB_SIZE, (6, T.SEQ_LEN)))
    text = torch.randn(6, 384)
    loss = model.pair_loss(audio[:3], text[:3], audio[3:], text[3:])
    with torch.no_grad():  # numpy reference from the embeddings
        a = model.embed_audio(audio).numpy().astype(np.float64)
        t = model.embed_text(text).numpy().astype(np.float64)
        scale = float(model.clamped_logit_scale().exp())
    cos = (a * t).sum(1)
    d = scale * (cos[:3] - cos[3:])
    assert float(loss.detach()) == pytest.approx(np.mean(np.log1p(np.exp(-d))), rel=1e-5)
    loss.backward()  # and the gradient reaches both towers
    assert model.audio_proj.weight.grad.abs().sum() > 0 and model.text_proj[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="text embeddings"):
        model.pair_loss(audio[:3], text[:2], audio[3:], text[3:])


def test_scorer_job_fits_on_pairs_and_logs_the_oracle_spearmans(datamodule):
    job = ScorerJob(model_config=MODEL, max_steps=2)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, val_check_interval=2, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(job, datamodule)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    s, cond = datamodule._sets["val"], datamodule.prompt_cond
    with torch.no_grad():  # every held-out generation of every pair, scored here
        job.model.eval()
        rows = torch.cat([s.pairs[:, 0], s.pairs[:, 1]])
        score = job.model.score_embeddings(short_render(s.tokens[rows]), cond[s.prompt[rows]]).double().numpy()
    adherence, prompt = s.adherence[rows].double().numpy(), s.prompt[rows].numpy()
    acc = np.mean((score[: len(s.pairs)] > score[len(s.pairs) :]) + 0.5 * (score[: len(s.pairs)] == score[len(s.pairs) :]))
    mean = {p: (score[prompt == p].mean(), adherence[prompt == p].mean()) for p in set(prompt)}
    cs = score - np.array([mean[p][0] for p in prompt])
    ca = adherence - np.array([mean[p][1] for p in prompt])
    assert logged["val/pairwise_acc"] == pytest.approx(acc, abs=1e-6)
    assert logged["val/spearman_oracle_adherence"] == pytest.approx(spearmanr(score, adherence).statistic, abs=1e-4)
    assert logged["val/spearman_within_prompt"] == pytest.approx(spearmanr(cs, ca).statistic, abs=1e-4)
    assert np.isfinite(logged["train/loss"])


def test_generations_are_cached_by_theta_inits_file_and_arguments(prompt_file, tmp_path, monkeypatch):
    monkeypatch.setenv("SUITE_ARTIFACTS", str(tmp_path / "artifacts"))
    weights = tmp_path / "lm.pt"
    weights.write_bytes(b"theta_init")
    dm = _datamodule(prompt_file)
    dm._lm_path = weights  # as prepare_data sets it for a file
    tokens, judged = dm.judged_generations(PROMPTS)
    cache = dm._cache_file(PROMPTS)
    assert cache.is_file() and cache.parent == tmp_path / "artifacts" / "generations"
    monkeypatch.setattr(dm, "_sample", lambda prompts: pytest.fail("sampled again despite the cache"))
    again, judged_again = dm.judged_generations(PROMPTS)
    assert torch.equal(again, tokens) and torch.equal(judged_again["adherence"].nan_to_num(-1), judged["adherence"].nan_to_num(-1))
    other = _datamodule(prompt_file, per_prompt=2)
    other._lm_path = weights
    assert other._cache_file(PROMPTS) != cache
    weights.write_bytes(b"another theta_init")
    assert dm._cache_file(PROMPTS) != cache
    assert not list(cache.parent.glob("*.tmp*"))  # written whole, then renamed


def test_a_scorer_spec_with_a_base_lm_trains_on_adherence_pairs():
    spec = {"data": {"base_lm": {"seed": 0}, "same_prompt": 0.5}}
    assert _data_target("scorer", spec) == ADHERENCE_DATA
    assert _data_kwargs("scorer", spec) == {"base_lm": {"seed": 0}, "same_prompt": 0.5}
    assert _data_target("scorer", {"data": {"trunk": "x.pt"}}) == TRUNK_DATA
    assert _data_target("scorer", {"data": {"n_pieces": 10}}) == JOBS["scorer"][1]


@pytest.mark.parametrize("share", [-0.1, 1.5, True, "half"])
def test_a_bad_same_prompt_share_is_named(share):
    with pytest.raises(ValueError, match="same_prompt must be in"):
        AdherencePairsDataModule(policy=_policy(), same_prompt=share)


def test_too_few_judged_prompts_are_named(prompt_file):
    with pytest.raises(ValueError, match="6 prompts in .* name attributes the oracle judges"):
        _datamodule(prompt_file, val_prompts=6).setup("fit")


def test_corpus_prompts_are_distinct_captions_of_the_training_corpus(tmp_path):
    from suite.music.corpus import build_corpus

    dm = AdherencePairsDataModule(policy=_policy(), prompts="corpus", corpus_prompts=12, n_pieces=40,
                                  root=str(tmp_path))  # fmt: skip
    prompts = dm._prompt_list()
    captions = build_corpus(seed=0, n=40, root=str(tmp_path)).captions
    assert len(prompts) == len(set(prompts)) == 12
    assert set(prompts) <= set(captions) and all(p.strip() for p in prompts)
    assert prompts == dm._prompt_list()  # a seeded draw
    again = AdherencePairsDataModule(policy=_policy(), prompts="corpus", corpus_prompts=12, n_pieces=40,
                                     root=str(tmp_path), seed=1)  # fmt: skip
    assert again._prompt_list() != prompts
    too_many = AdherencePairsDataModule(policy=_policy(), prompts="corpus", corpus_prompts=10_000, n_pieces=40,
                                        root=str(tmp_path))  # fmt: skip
    with pytest.raises(ValueError, match="corpus_prompts=10000 but the corpus has"):
        too_many._prompt_list()


@pytest.mark.parametrize("kwargs", [{"prompts": "corpus"}, {"prompts": "train", "corpus_prompts": 8}])
def test_corpus_prompts_and_their_count_go_together(kwargs):
    with pytest.raises(ValueError, match="prompts 'corpus' and corpus_prompts >= 1 go together"):
        AdherencePairsDataModule(policy=_policy(), **kwargs)


def test_train_text_false_keeps_the_text_head_and_trains_the_audio_side(datamodule):
    job = ScorerJob(model_config=MODEL, max_steps=1, train_text=False, lr=1e-2, warmup_steps=0)
    text0 = {k: v.clone() for k, v in job.model.text_proj.state_dict().items()}
    audio0 = job.model.audio_proj.weight.detach().clone()
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(job, datamodule)
    assert all(torch.equal(v, text0[k]) for k, v in job.model.text_proj.state_dict().items())
    assert not torch.equal(job.model.audio_proj.weight, audio0)
    with pytest.raises(ValueError, match="train_text must be true or false"):
        ScorerJob(model_config=MODEL, train_text="no")
