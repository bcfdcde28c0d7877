"""Tests of the student LightningModule (paper sections 2.1-2.3) and its evaluation helpers.

The student holds its generator behind `suite.policies.Policy` (here the music world's
`MusicPolicy` over a tiny random TokenLM, see `student_common`). Lightning runs, exports,
resuming and DDP are in `test_student_fit.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from student_common import (
    PROMPTS,
    TINY_LM,
    make,
    params,
    prompt_batch,
    ready,
    save_checkpoints,
    spec,
)

import lightning_modules.student as student_mod
import suite.rollout as rollout_mod
from lightning_modules.student import DistillStudent
from suite.metrics.eval_set import EvalMetrics
from suite.models.lm import TokenLM
from suite.music.tokens import SEQ_LEN, VOCAB_SIZE, allowed_mask
from suite.objectives import diversity_rewards
from suite.policies.music import MusicOracle, MusicPolicy
from suite.rollout import embed_audio, generate, policy_audio, save_samples, sequence_log_probs
from suite.sampling import MASK_VALUE


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return save_checkpoints(tmp_path_factory.mktemp("student_ckpts"))


# ------------------------------------------------------------------------ construction
def test_construction_is_cheap_and_loads_nothing(tmp_path):
    # Paths that do not exist: __init__ must not resolve or load anything.
    policy = spec(tmp_path / "nope.pt", use_grammar_mask=True)
    m = DistillStudent(policy=policy, embedder=str(tmp_path / "no.pt"))
    assert m.student is None and m._frozen == {} and m._student_policy is None
    assert m.hparams.beta == 15.0 and m.hparams.gamma == 3.0 and m.hparams.n_generations == 2
    assert m.hparams.policy == policy  # the grammar mask comes with the policy, in setup()
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        m.setup("fit")


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(beta=-1.0), "beta"),
        (dict(n_generations=1, beta=5.0), "n_generations"),
        (dict(gamma=-0.5), "gamma"),
        (dict(temperature=0.0), "temperature"),
        (dict(kl_kind="kl"), "kl_kind"),
        (dict(kl_reduce="max"), "kl_reduce"),
        (dict(baseline="mean"), "baseline"),
        (dict(jsd_beta=1.0), "jsd_beta"),
        (dict(n_eval_generations=1), "n_eval_generations"),
        (dict(lr=0.0), "lr"),
        (dict(policy={"checkpoint": "x.pt"}), "policy"),
        (dict(export_path="student.pt"), "export_path"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_value(ckpts, kw, name):
    with pytest.raises(ValueError, match=name):
        make(ckpts, **kw)


def test_single_generation_allowed_without_diversity(ckpts):
    m = ready(ckpts, beta=0.0, n_generations=1)
    loss, stats = m.distill_step(prompt_batch(2))
    assert "train/reward_mean" not in stats and torch.isfinite(loss)


def test_bad_artifacts_raise_before_training(ckpts, tmp_path):
    with pytest.raises(ValueError, match="d_model"):
        make(ckpts, policy=spec(ckpts["lm"], expected_config={"d_model": 64})).setup("fit")
    with pytest.raises(ValueError, match="seq_len=40"):
        make(ckpts, policy=spec(ckpts["lm_small"])).setup("fit")
    with pytest.raises(FileNotFoundError, match="missing_embedder"):
        make(ckpts, embedder=str(tmp_path / "missing_embedder.pt")).setup("fit")


def test_a_judge_at_another_rate_gets_resampled_audio(ckpts, caplog):
    from lightning_modules.judges import Resampled

    with caplog.at_level("INFO", logger="lightning_modules.judges"):
        m = ready(ckpts, embedder=ckpts["emb22k"])
    judge = m._frozen["embedder"]
    assert isinstance(judge, Resampled) and judge.judge.sample_rate == 22050
    assert "reads 22050 Hz audio" in caplog.text
    audio = torch.randn(2, 16000) * 0.1
    from suite.models.mel import resample

    with torch.no_grad():
        torch.testing.assert_close(judge(audio), judge.judge(resample(audio, 16000, 22050)))


# ------------------------------------------------------------------------ the training step
def test_step_changes_student_not_teacher(ckpts):
    m = ready(ckpts, beta=15.0)
    assert all(not p.requires_grad for p in m.teacher.parameters())
    assert not m.teacher.training
    assert m.policy.trainable is m.student and m.teacher.trainable is not m.student
    # The frozen models are outside the module tree: not optimised, not checkpointed.
    assert all(k.startswith("student.") for k in m.state_dict())
    opt = m.configure_optimizers()
    opt_ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert opt_ids == {id(p) for p in m.student.parameters()}
    s0, t0 = params(m.student), params(m.teacher)
    loss, stats = m.distill_step(prompt_batch(4))
    assert m.student.training  # sampling ran in eval mode and restored train mode
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(s0, params(m.student)))
    assert all(torch.equal(a, b) for a, b in zip(t0, params(m.teacher)))
    for key in ("train/kl", "train/reward_mean", "train/reward_std", "train/advantage_std",
                "train/beta_t", "train/entropy", "train/loss", "time/sampling", "time/teacher",
                "time/student", "time/render", "time/embed"):  # fmt: skip
        assert key in stats and np.isfinite(stats[key]), key
    assert 0 < stats["train/entropy"] < np.log(VOCAB_SIZE)


def test_beta_zero_loss_is_the_kl(ckpts):
    m = ready(ckpts, beta=0.0)
    loss, stats = m.distill_step(prompt_batch(3))
    assert stats["train/kl"] > 0
    assert float(loss.detach()) == stats["train/kl"]


def test_beta_ramp_scales_the_surrogate(ckpts):
    m = ready(ckpts, beta=10.0, beta_warmup_steps=1000)
    # global_step is 0 outside a Trainer: beta(0) = 0, so the loss is the KL alone.
    loss, stats = m.distill_step(prompt_batch(3))
    assert stats["train/beta_t"] == 0.0 and float(loss.detach()) == stats["train/kl"]


def test_kl_is_zero_when_teacher_is_the_student_without_guidance(ckpts):
    m = ready(ckpts, gamma=1.0, beta=0.0)
    _, stats = m.distill_step(prompt_batch(4))
    assert abs(stats["train/kl"]) < 1e-5
    # ... and not with guidance: the test could fail.
    m3 = ready(ckpts, gamma=3.0, beta=0.0, negative_prompt="")
    _, stats3 = m3.distill_step(prompt_batch(4))
    assert stats3["train/kl"] > 1e-3


def test_grammar_mask_is_shared_by_student_and_teacher(ckpts, monkeypatch):
    seen = {}
    real = rollout_mod.token_kl

    def spy(s, t, *args, **kw):
        seen["s"], seen["t"] = s.detach(), t.detach()
        return real(s, t, *args, **kw)

    monkeypatch.setattr(rollout_mod, "token_kl", spy)
    m = ready(ckpts, beta=0.0, negative_prompt="")
    assert torch.equal(m.teacher.allowed_mask(), allowed_mask()[None])  # [K=1, L, V]
    _, stats = m.distill_step(prompt_batch(2))
    blocked = ~allowed_mask()  # [L, V]; the KL sees K * L = L positions
    for key in ("s", "t"):
        assert torch.equal(seen[key] == MASK_VALUE, blocked.expand_as(seen[key])), key
    # Same support on both sides keeps the KL small, not ~1e9 / T.
    assert stats["train/kl"] < 1e3


def test_sampled_tokens_obey_the_grammar_and_log_probs_match_a_reference(ckpts):
    m = ready(ckpts)
    cond = m.encode(m.policy, PROMPTS[:2])
    tokens, logits = generate(m.policy, cond, 3, temperature=0.7,
                              allowed=m.policy.allowed_mask(), return_logits=True)  # fmt: skip
    assert tokens.shape == (2, 3, 1, SEQ_LEN) and logits.shape == (2, 3, 1, SEQ_LEN, VOCAB_SIZE)
    pos = torch.arange(SEQ_LEN)
    assert bool(allowed_mask()[pos, tokens.reshape(-1, SEQ_LEN)].all())
    # Sequence log-prob vs an independent float64 numpy computation.
    z = logits.reshape(6, SEQ_LEN, -1).double().numpy() / 0.7
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    ref = np.take_along_axis(logp, tokens.reshape(6, SEQ_LEN, 1).numpy(), -1).sum((1, 2))
    got = sequence_log_probs(logits.reshape(6, 1, SEQ_LEN, -1), tokens.reshape(6, 1, SEQ_LEN), 0.7)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4)


def test_advantages_not_all_zero_at_n2_and_baseline_from_other_prompts(ckpts):
    m = make(ckpts, n_generations=2)
    logprobs = torch.randn(4, 2, requires_grad=True)
    emb = torch.randn(4, 2, 8)
    rewards = diversity_rewards(emb)
    loss, info = m.diversity_surrogate(logprobs, rewards)
    adv = info["advantages"].numpy()
    r = rewards.numpy()
    # Independent leave-one-prompt-out baseline.
    ref = np.stack([r[i] - np.delete(r, i, axis=0).mean() for i in range(4)])
    np.testing.assert_allclose(adv, ref, rtol=1e-5, atol=1e-6)
    assert np.abs(adv).max() > 1e-4
    np.testing.assert_allclose(
        float(loss.detach()), -(ref * logprobs.detach().numpy()).mean(), rtol=1e-5
    )


def test_ema_baseline_updates(ckpts):
    m = make(ckpts, baseline="ema", ema_decay=0.5)
    r1 = torch.full((2, 2), 0.4)
    m.diversity_surrogate(torch.zeros(2, 2), r1)
    assert m.ema_baseline == pytest.approx(0.4)
    m.diversity_surrogate(torch.zeros(2, 2), torch.full((2, 2), 0.8))
    assert m.ema_baseline == pytest.approx(0.6)


def test_non_finite_loss_stops_before_backward(ckpts):
    m = ready(ckpts, beta=0.0)
    real = m.policy.forward
    # Poison only the teacher-forced pass (sampling uses start/step and stays finite).
    m.policy.forward = lambda tokens, cond: real(tokens, cond) * float("nan")
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        m.distill_step(prompt_batch(2))


# ------------------------------------------------------------------------ evaluation helpers
def test_eval_helpers_and_metric_names(ckpts, tmp_path):
    m = ready(ckpts, scorer=ckpts["scorer"], preference=ckpts["pref"])
    tokens, audio = m.evaluate_batch(PROMPTS[:2], seed=0)
    tokens2, _ = m.evaluate_batch(PROMPTS[:2], seed=0)
    assert tokens.shape == (2, 2, 1, SEQ_LEN) and audio.shape[:2] == (2, 2)
    assert torch.equal(tokens, tokens2)  # a fixed seed gives the same eval draws
    values = m.eval_metrics.compute()
    for name in ("quality", "mulan", "preference", "diversity", "vendi", "oracle_quality",
                 "oracle_adherence", "kl_teacher", "entropy"):  # fmt: skip
        assert f"eval/{name}" in values and np.isfinite(values[f"eval/{name}"]), name
    comps = values
    assert comps["eval/quality"] == pytest.approx(
        5.0 * comps["eval/mulan"] + comps["eval/preference"]
    )
    paths = save_samples(tmp_path / "s", m.policy, tokens[:, 0], audio[:, 0], PROMPTS[:2])
    assert {p.suffix for p in paths} == {".wav", ".mid", ".tsv"} and all(p.is_file() for p in paths)


def test_oracle_adherence_skips_prompts_without_attributes():
    tokens = torch.randint(0, VOCAB_SIZE, (2, 2, 1, SEQ_LEN))
    out = MusicOracle().scores(tokens, ["Upbeat jazz piece in C major.", "zzz qqq"])
    assert out["quality"].shape == (2, 2)
    assert bool(torch.isfinite(out["adherence"][0]).all())
    assert bool(torch.isnan(out["adherence"][1]).all())


def test_cfg_generation_matches_plain_at_gamma_one(ckpts):
    m = ready(ckpts)
    teacher, allowed = m.teacher, m.teacher.allowed_mask()
    cond = m.encode(teacher, PROMPTS[:2])
    g = torch.Generator().manual_seed(3)
    plain, _ = generate(teacher, cond, 2, temperature=0.99, allowed=allowed, generator=g)
    g = torch.Generator().manual_seed(3)
    neg = m.negative(teacher, m.hparams.negative_prompt)
    cfg1, _ = generate(teacher, cond, 2, temperature=0.99, gamma=1.0, neg_cond=neg,
                       allowed=allowed, generator=g)  # fmt: skip
    assert torch.equal(plain, cfg1)
    emb = embed_audio(m._need("embedder"), policy_audio(teacher, plain))
    assert emb.shape == (2, 2, 8)
    metrics = EvalMetrics()
    metrics.update(PROMPTS[:2], embeddings=emb, oracle=teacher.oracle.scores(plain, PROMPTS[:2]))
    means = {"eval/diversity", "eval/vendi", "eval/oracle_quality", "eval/oracle_adherence"}
    assert set(metrics.compute()) == means | {f"{m}_ci_{e}" for m in means for e in ("low", "high")}


def test_module_moves_carry_the_frozen_models(ckpts):
    m = ready(ckpts, scorer=ckpts["scorer"])
    m.double()
    for name in ("teacher", "embedder", "scorer"):
        assert next(m._frozen[name].parameters()).dtype == torch.float64, name
    assert next(m.student.parameters()).dtype == torch.float64
    assert next(m.policy.parameters()).dtype == torch.float64  # the policy wraps m.student
    assert m.teacher.allowed_mask().dtype == torch.bool
    assert m.policy.allowed_mask().dtype == torch.bool


# ------------------------------------------------------------ review follow-ups
def test_step_scores_the_policy_that_sampled_even_with_dropout(ckpts, tmp_path, monkeypatch):
    """The REINFORCE log-probs are those of the sampling policy (dropout off while scoring)."""
    path = tmp_path / "lm_dropout.pt"
    torch.manual_seed(1)
    TokenLM(VOCAB_SIZE, SEQ_LEN, **{**TINY_LM, "dropout": 0.3}).save(path)
    m = make(ckpts, policy=spec(path), beta=5.0, temperature=0.8)
    m.setup("fit")
    m.train()
    assert m.student.training and isinstance(m.policy, MusicPolicy)
    seen = {}
    real_generate = student_mod.generate

    def spy_generate(*args, **kw):
        tokens, logits = real_generate(*args, **{**kw, "return_logits": True})
        seen["tokens"], seen["logits"] = tokens, logits
        return tokens, logits

    monkeypatch.setattr(student_mod, "generate", spy_generate)
    _, stats = m.distill_step(prompt_batch(2))
    B, N, K, L = seen["tokens"].shape
    ref = sequence_log_probs(
        seen["logits"].reshape(B * N, K, L, -1), seen["tokens"].reshape(B * N, K, L), 0.8
    )
    assert stats["train/logprob"] == pytest.approx(float(ref.mean()), rel=1e-4)
    assert m.student.training  # train mode restored after scoring


def test_kl_and_log_probs_use_the_sampling_temperature(ckpts, monkeypatch):
    seen = {}
    real_kl, real_lp = student_mod.kl_to_teacher, student_mod.sequence_log_probs

    def spy_kl(s, t, temperature, *args, **kw):
        seen["kl_T"] = temperature
        return real_kl(s, t, temperature, *args, **kw)

    def spy_lp(logits, tokens, temperature):
        seen["lp_T"] = temperature
        return real_lp(logits, tokens, temperature)

    monkeypatch.setattr(student_mod, "kl_to_teacher", spy_kl)
    monkeypatch.setattr(student_mod, "sequence_log_probs", spy_lp)
    m = ready(ckpts, beta=1.0, temperature=0.77)
    m.distill_step(prompt_batch(2))
    assert seen == {"kl_T": 0.77, "lp_T": 0.77}


def test_beta_ramp_mid_way_weights_the_surrogate(ckpts, monkeypatch):
    m = ready(ckpts, beta=10.0, beta_warmup_steps=1000)
    monkeypatch.setattr(DistillStudent, "global_step", property(lambda self: 250))
    loss, stats = m.distill_step(prompt_batch(3))
    assert stats["train/beta_t"] == pytest.approx(2.5)
    expected = stats["train/kl"] + 2.5 * stats["train/surrogate"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_beta_scale_multiplies_the_scheduled_beta(ckpts, monkeypatch):
    m = ready(ckpts, beta=10.0, beta_warmup_steps=1000, beta_scale=3.0)
    monkeypatch.setattr(DistillStudent, "global_step", property(lambda self: 250))
    loss, stats = m.distill_step(prompt_batch(3))
    assert stats["train/beta_t"] == pytest.approx(2.5)  # the paper's label, ramped
    assert stats["train/beta_weight"] == pytest.approx(7.5)
    expected = stats["train/kl"] + 7.5 * stats["train/surrogate"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="beta_scale"):
        ready(ckpts, beta=1.0, beta_scale=0.0)
