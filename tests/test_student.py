"""Tests of the student LightningModule (paper sections 2.1-2.3) and its evaluation helpers.

Tiny random-init models are saved to a temp dir once per module, so every test loads real
checkpoints through the same code path as a run, in well under a second each.
"""

from __future__ import annotations

import socket

import lightning as L
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

import lightning_modules.student as student_mod
from lightning_modules.evaluation import (
    EvalMetrics,
    embed_audio,
    generate,
    oracle_scores,
    render_audio,
    save_samples,
    sequence_log_probs,
)
from lightning_modules.student import DistillStudent
from suite.models.lm import TokenLM
from suite.models.mel import MelConfig
from suite.models.preference import PreferenceConfig, PreferenceModel
from suite.models.scorer import MuLanScorer, ScorerConfig
from suite.models.vit import AudioEmbedder, EmbedderConfig, EncoderConfig, ViTConfig
from suite.music.tokens import SEQ_LEN, VOCAB_SIZE, allowed_mask
from suite.objectives import diversity_rewards
from suite.sampling import MASK_VALUE

TINY_LM = dict(d_model=32, n_layers=1, n_heads=2, d_ff=64, n_prefix=2)
VIT = ViTConfig(width=16, depth=1, heads=2, head_dim=8, ff_dim=32)
PROMPTS = [
    "Upbeat jazz piece in C major.",
    "A sad piano ballad",
    "Rock song.",
    "A peaceful sunset on a beach",
]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("student_ckpts")
    torch.manual_seed(0)
    paths = {k: d / f"{k}.pt" for k in ("lm", "emb", "scorer", "pref", "emb22k", "lm_small")}
    TokenLM(VOCAB_SIZE, SEQ_LEN, **TINY_LM).save(paths["lm"])
    TokenLM(VOCAB_SIZE, 40, **TINY_LM).save(paths["lm_small"])
    AudioEmbedder(EmbedderConfig(EncoderConfig(vit=VIT), out_dim=8)).save(paths["emb"])
    AudioEmbedder(
        EmbedderConfig(EncoderConfig(mel=MelConfig(sample_rate=22050), vit=VIT), out_dim=8)
    ).save(paths["emb22k"])
    MuLanScorer(ScorerConfig(encoder=EncoderConfig(vit=VIT), text_hidden=16, joint_dim=8)).save(
        paths["scorer"]
    )
    PreferenceModel(PreferenceConfig(encoder=EncoderConfig(vit=VIT), hidden=8)).save(paths["pref"])
    return {k: str(v) for k, v in paths.items()}


def make(ckpts, **kw) -> DistillStudent:
    args = dict(base_lm=ckpts["lm"], embedder=ckpts["emb"], beta_warmup_steps=0, lr=1e-3)
    args.update(kw)
    return DistillStudent(**args)


def ready(ckpts, **kw) -> DistillStudent:
    m = make(ckpts, **kw)
    m.setup("fit")
    return m


def prompt_batch(b: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    cond = torch.nn.functional.normalize(torch.randn(b, 384, generator=g), dim=-1)
    return {"prompt": [PROMPTS[i % len(PROMPTS)] for i in range(b)], "cond": cond,
            "index": torch.arange(b)}  # fmt: skip


class Prompts(Dataset):
    def __init__(self, n: int, seed: int):
        self.batch = prompt_batch(n, seed)

    def __len__(self):
        return len(self.batch["prompt"])

    def __getitem__(self, i):
        return {"prompt": self.batch["prompt"][i], "cond": self.batch["cond"][i], "index": i}


def params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


# ------------------------------------------------------------------------ construction
def test_construction_is_cheap_and_loads_nothing(tmp_path):
    # Paths that do not exist: __init__ must not resolve or load anything.
    m = DistillStudent(base_lm=str(tmp_path / "nope.pt"), embedder=str(tmp_path / "no.pt"))
    assert m.student is None and m._frozen == {}
    assert m.hparams.beta == 15.0 and m.hparams.gamma == 3.0 and m.hparams.n_generations == 2
    assert m.allowed.shape == (SEQ_LEN, VOCAB_SIZE)
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
        make(ckpts, base_lm_config={"d_model": 64}).setup("fit")
    with pytest.raises(ValueError, match="seq_len=40"):
        make(ckpts, base_lm=ckpts["lm_small"]).setup("fit")
    with pytest.raises(ValueError, match="22050 Hz"):
        make(ckpts, embedder=ckpts["emb22k"]).setup("fit")
    with pytest.raises(FileNotFoundError, match="missing_embedder"):
        make(ckpts, embedder=str(tmp_path / "missing_embedder.pt")).setup("fit")


# ------------------------------------------------------------------------ the training step
def test_step_changes_student_not_teacher(ckpts):
    m = ready(ckpts, beta=15.0)
    assert all(not p.requires_grad for p in m.teacher.parameters())
    assert not m.teacher.training
    # The frozen models are outside the module tree: not optimised, not checkpointed.
    assert not any(k.startswith(("teacher", "embedder", "_frozen")) for k in m.state_dict())
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
    real = student_mod.token_kl

    def spy(s, t, *args, **kw):
        seen["s"], seen["t"] = s.detach(), t.detach()
        return real(s, t, *args, **kw)

    monkeypatch.setattr(student_mod, "token_kl", spy)
    m = ready(ckpts, beta=0.0, negative_prompt="")
    _, stats = m.distill_step(prompt_batch(2))
    blocked = ~allowed_mask()  # [L, V]
    for key in ("s", "t"):
        assert torch.equal(seen[key] == MASK_VALUE, blocked.expand_as(seen[key])), key
    # Same support on both sides keeps the KL small, not ~1e9 / T.
    assert stats["train/kl"] < 1e3


def test_sampled_tokens_obey_the_grammar_and_log_probs_match_a_reference(ckpts):
    m = ready(ckpts)
    cond = prompt_batch(2)["cond"]
    tokens, logits = generate(m.student, cond, 3, temperature=0.7, allowed=m.allowed,
                              return_logits=True)  # fmt: skip
    assert tokens.shape == (2, 3, SEQ_LEN) and logits.shape == (2, 3, SEQ_LEN, VOCAB_SIZE)
    allowed = allowed_mask()
    pos = torch.arange(SEQ_LEN)
    assert bool(allowed[pos, tokens.reshape(-1, SEQ_LEN)].all())
    # Sequence log-prob vs an independent float64 numpy computation.
    z = logits.reshape(6, SEQ_LEN, -1).double().numpy() / 0.7
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    ref = np.take_along_axis(logp, tokens.reshape(6, SEQ_LEN, 1).numpy(), -1).sum((1, 2))
    got = sequence_log_probs(logits.reshape(6, SEQ_LEN, -1), tokens.reshape(6, SEQ_LEN), 0.7)
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
    real = m.student.forward
    # Poison only the teacher-forced pass (sampling uses start/step and stays finite).
    m.student.forward = lambda tokens, cond: real(tokens, cond) * float("nan")
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        m.distill_step(prompt_batch(2))


# ------------------------------------------------------------------------ evaluation helpers
def test_eval_helpers_and_metric_names(ckpts, tmp_path):
    m = ready(ckpts, scorer=ckpts["scorer"], preference=ckpts["pref"])
    cond = prompt_batch(2)["cond"]
    tokens, audio = m.evaluate_batch(cond, PROMPTS[:2], seed=0)
    tokens2, _ = m.evaluate_batch(cond, PROMPTS[:2], seed=0)
    assert torch.equal(tokens, tokens2)  # a fixed seed gives the same eval draws
    values = m.eval_metrics.compute()
    for name in ("quality", "mulan", "preference", "diversity", "vendi", "oracle_quality",
                 "oracle_adherence", "kl_teacher", "entropy"):  # fmt: skip
        assert f"eval/{name}" in values and np.isfinite(values[f"eval/{name}"]), name
    comps = values
    assert comps["eval/quality"] == pytest.approx(
        5.0 * comps["eval/mulan"] + comps["eval/preference"]
    )
    paths = save_samples(tmp_path / "s", tokens[:, 0], audio[:, 0], PROMPTS[:2])
    assert {p.suffix for p in paths} == {".wav", ".mid", ".tsv"} and all(p.is_file() for p in paths)


def test_oracle_adherence_skips_prompts_without_attributes():
    tokens = torch.randint(0, VOCAB_SIZE, (2, 2, SEQ_LEN))
    out = oracle_scores(tokens, ["Upbeat jazz piece in C major.", "zzz qqq"])
    assert out["quality"].shape == (2, 2)
    assert bool(torch.isfinite(out["adherence"][0]).all())
    assert bool(torch.isnan(out["adherence"][1]).all())


def test_cfg_generation_matches_plain_at_gamma_one(ckpts):
    m = ready(ckpts)
    cond = prompt_batch(2)["cond"]
    g = torch.Generator().manual_seed(3)
    plain, _ = generate(m.teacher, cond, 2, temperature=0.99, allowed=m.allowed, generator=g)
    g = torch.Generator().manual_seed(3)
    cfg1, _ = generate(m.teacher, cond, 2, temperature=0.99, gamma=1.0, neg_cond=m.neg_cond,
                       allowed=m.allowed, generator=g)  # fmt: skip
    assert torch.equal(plain, cfg1)
    emb = embed_audio(m.reward_embedder, render_audio(plain))
    assert emb.shape == (2, 2, 8)
    metrics = EvalMetrics()
    metrics.update(plain, PROMPTS[:2], embeddings=emb)
    assert set(metrics.compute()) == {"eval/diversity", "eval/vendi", "eval/oracle_quality",
                                      "eval/oracle_adherence"}  # fmt: skip


# ------------------------------------------------------------------------ Lightning runs
def _trainer(tmp_path, max_steps, **kw):
    from lightning.pytorch.callbacks import ModelCheckpoint

    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, logger=kw.pop("logger", False),
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)],
        default_root_dir=tmp_path, **kw,
    )  # fmt: skip


def test_fit_with_validation_logs_metric_names(ckpts, tmp_path):
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(
        experiment_name="t",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "art"),
    )
    m = make(ckpts, scorer=ckpts["scorer"], preference=ckpts["pref"], n_audio_samples=2)
    trainer = _trainer(tmp_path, 3, logger=logger, val_check_interval=3, limit_val_batches=1)
    train = DataLoader(Prompts(12, 0), batch_size=4)
    val = DataLoader(Prompts(2, 1), batch_size=2)
    trainer.fit(m, train, val)
    assert trainer.global_step == 3
    names = set(trainer.callback_metrics)
    for name in ("train/kl", "train/reward_mean", "train/entropy", "time/sampling",
                 "eval/quality", "eval/mulan", "eval/preference", "eval/diversity", "eval/vendi",
                 "eval/oracle_quality", "eval/kl_teacher", "eval/entropy"):  # fmt: skip
        assert name in names, name
    arts = logger.experiment.list_artifacts(logger.run_id, "samples/step3")
    assert {a.path.rsplit(".", 1)[-1] for a in arts} == {"wav", "mid", "tsv"}


def test_resume_keeps_step_ema_and_student(ckpts, tmp_path):
    train = DataLoader(Prompts(8, 0), batch_size=4)
    m = make(ckpts, baseline="ema", beta=5.0)
    _trainer(tmp_path, 2).fit(m, train)
    ema, student = m.ema_baseline, params(m.student)
    last = tmp_path / "step2.ckpt"  # a copy: the resumed run rewrites ckpt/last.ckpt
    last.write_bytes((tmp_path / "ckpt" / "last.ckpt").read_bytes())
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["distill_student"]["ema_baseline"] == pytest.approx(ema)
    assert all(k.startswith("student.") for k in ckpt["state_dict"])  # no teacher copy

    seen = {}

    class Probe(L.Callback):
        def on_train_start(self, trainer, module):
            seen["step"], seen["ema"] = trainer.global_step, module.ema_baseline
            seen["student"] = params(module.student)
            seen["teacher_equals_base"] = all(
                torch.equal(a, b) for a, b in zip(params(module.teacher), params(m.teacher))
            )

    m2 = make(ckpts, baseline="ema", beta=5.0)
    t2 = _trainer(tmp_path, 3)
    t2.callbacks.append(Probe())
    t2.fit(m2, train, ckpt_path=str(last))
    assert seen["step"] == 2 and seen["ema"] == pytest.approx(ema)
    assert all(torch.equal(a, b) for a, b in zip(seen["student"], student))
    assert seen["teacher_equals_base"]  # the teacher is theta_init again, not the student
    assert t2.global_step == 3 and m2.ema_baseline != ema

    # load_from_checkpoint rebuilds the student without setup().
    m3 = DistillStudent.load_from_checkpoint(str(last))
    assert all(torch.equal(a, b) for a, b in zip(params(m3.student), student))


# ------------------------------------------------------------------------ DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, port, ckpt, logprobs, emb, baseline, out):
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        m = DistillStudent(base_lm=ckpt, embedder=ckpt, baseline=baseline, ema_decay=0.9)
        m.ema_baseline = 0.3 if baseline == "ema" else None
        half = logprobs.shape[0] // 2
        lp = logprobs[rank * half : (rank + 1) * half].clone().requires_grad_(True)
        rewards = diversity_rewards(emb[rank * half : (rank + 1) * half])
        loss, info = m.diversity_surrogate(lp, rewards)
        loss.backward()
        torch.save(
            {"loss": loss.detach(), "grad": lp.grad, "adv": info["advantages"],
             "mean": info["reward_mean"], "ema": m.ema_baseline},
            f"{out}/rank{rank}.pt",
        )  # fmt: skip
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("baseline", ["batch", "ema"])
def test_ddp_baseline_matches_single_process(ckpts, tmp_path, baseline):
    g = torch.Generator().manual_seed(1)
    logprobs = torch.randn(6, 2, generator=g)
    emb = torch.randn(6, 2, 8, generator=g)
    m = make(ckpts, baseline=baseline, ema_decay=0.9)
    m.ema_baseline = 0.3 if baseline == "ema" else None
    lp = logprobs.clone().requires_grad_(True)
    loss, info = m.diversity_surrogate(lp, diversity_rewards(emb))
    loss.backward()
    mp.spawn(_ddp_worker, args=(_free_port(), ckpts["lm"], logprobs, emb, baseline,
                                str(tmp_path)), nprocs=2, join=True)  # fmt: skip
    r = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    torch.testing.assert_close(torch.cat([r[0]["adv"], r[1]["adv"]]), info["advantages"])
    # DDP averages gradients over ranks: the mean of the per-rank losses / gradients.
    torch.testing.assert_close((r[0]["loss"] + r[1]["loss"]) / 2, loss.detach())
    torch.testing.assert_close(torch.cat([r[0]["grad"], r[1]["grad"]]) / 2, lp.grad)
    for k in range(2):
        torch.testing.assert_close(r[k]["mean"], info["reward_mean"])
        if baseline == "ema":
            assert r[k]["ema"] == pytest.approx(m.ema_baseline)


def test_module_moves_carry_the_frozen_models(ckpts):
    m = ready(ckpts, scorer=ckpts["scorer"])
    m.double()
    for name in ("teacher", "embedder", "scorer"):
        assert next(m._frozen[name].parameters()).dtype == torch.float64, name
    assert next(m.student.parameters()).dtype == torch.float64
    assert m.allowed.dtype == torch.bool


# ------------------------------------------------------------ review follow-ups
def test_step_scores_the_policy_that_sampled_even_with_dropout(ckpts, tmp_path, monkeypatch):
    """The REINFORCE log-probs are those of the sampling policy (dropout off while scoring)."""
    path = tmp_path / "lm_dropout.pt"
    torch.manual_seed(1)
    TokenLM(VOCAB_SIZE, SEQ_LEN, **{**TINY_LM, "dropout": 0.3}).save(path)
    m = make(ckpts, base_lm=str(path), beta=5.0, temperature=0.8)
    m.setup("fit")
    m.train()
    seen = {}
    real_generate = student_mod.generate

    def spy_generate(*args, **kw):
        tokens, _ = real_generate(*args, **{**kw, "return_logits": True})
        seen["tokens"], seen["logits"] = tokens, _
        return tokens, _

    monkeypatch.setattr(student_mod, "generate", spy_generate)
    _, stats = m.distill_step(prompt_batch(2))
    B, N, L = seen["tokens"].shape
    ref = sequence_log_probs(
        seen["logits"].reshape(B * N, L, -1), seen["tokens"].reshape(B * N, L), 0.8
    )
    assert stats["train/logprob"] == pytest.approx(float(ref.mean()), rel=1e-4)
    assert m.student.training  # train mode restored after scoring


def test_kl_and_log_probs_use_the_sampling_temperature(ckpts, monkeypatch):
    seen = {}
    real_kl, real_lp = student_mod.token_kl, student_mod.sequence_log_probs

    def spy_kl(*args, **kw):
        seen["kl_T"] = kw.get("temperature")
        return real_kl(*args, **kw)

    def spy_lp(logits, tokens, temperature):
        seen["lp_T"] = temperature
        return real_lp(logits, tokens, temperature)

    monkeypatch.setattr(student_mod, "token_kl", spy_kl)
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
