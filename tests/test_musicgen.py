"""MusicGen behind the policy interface (suite/policies/musicgen.py), on a tiny random model.

Checked against transformers' own MusicGen pieces: CFG at gamma 1 is the conditional policy
exactly; the batched 2B-row CFG step equals two separate forwards; cached decoding equals a
full teacher-forced forward; the delay pattern round-trips and is never violated by a
sample; and the user's commands run end to end (fit, LERP merge, evaluation, DDP).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from suite_cli import mlflow_runs, run_suite

from suite.policies import build_policy
from suite.policies.exports import load_export
from suite.policies.musicgen import MusicGenPolicy, delay, delay_mask, undelay
from suite.rollout import generate, kl_to_teacher
from suite.sampling import MASK_VALUE, mask_logits, sample, score

PROMPTS = ["Rock song.", "A sad piano ballad in C minor", "Upbeat jazz"]


@pytest.fixture(scope="module")
def mg() -> MusicGenPolicy:
    return build_policy({"name": "musicgen", "tiny": True, "frames": 12})


def test_delay_pattern_round_trips_and_masks_only_the_pad_where_it_must():
    codes = torch.randint(0, 64, (3, 4, 12))
    tokens = delay(codes, pad=64)
    assert tokens.shape == (3, 4, 15) and torch.equal(undelay(tokens, 12), codes)
    allowed = delay_mask(4, 12, 64)  # [K, L, V + 1]
    picked = allowed.gather(-1, tokens[0][..., None])[..., 0]  # every token of a valid piece
    assert picked.all() and (allowed.sum(-1) == torch.where(tokens[0] == 64, 1, 64)).all()


def test_samples_never_break_the_delay_pattern(mg):
    cond = mg.encode_text(PROMPTS)
    neg = mg.encode_text(["Bad audio quality."])
    tokens, _ = generate(mg, cond, 3, temperature=3.0, gamma=3.0, neg_cond=neg,
                         allowed=mg.allowed_mask(), generator=torch.Generator().manual_seed(0))  # fmt: skip
    flat = tokens.reshape(-1, 4, mg.seq_len)
    assert torch.equal(delay(undelay(flat, mg.frames), mg.pad), flat)


def test_cfg_at_gamma_one_is_the_conditional_policy_exactly(mg):
    cond, neg = mg.encode_text(PROMPTS), mg.encode_text(["Bad audio quality."])
    plain = sample(mg, cond, allowed=mg.allowed_mask(), return_logits=True,
                   generator=torch.Generator().manual_seed(3))  # fmt: skip
    cfg1 = sample(mg, cond, neg_cond=neg, gamma=1.0, allowed=mg.allowed_mask(), return_logits=True,
                  generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert torch.equal(plain.tokens, cfg1.tokens) and torch.equal(plain.logits, cfg1.logits)
    s = score(mg, plain.tokens, cond, neg_cond=neg, gamma=1.0, allowed=mg.allowed_mask())
    assert torch.equal(s.cfg, s.cond)


def test_batched_cfg_step_equals_two_separate_forwards(mg):
    cond, neg = mg.encode_text(PROMPTS), mg.encode_text(["Bad audio quality."])
    out = sample(mg, cond, neg_cond=neg, gamma=3.0, allowed=mg.allowed_mask(), return_logits=True,
                 generator=torch.Generator().manual_seed(1))  # fmt: skip
    separate = 3.0 * mg(out.tokens, cond) - 2.0 * mg(out.tokens, neg.expand(3))
    separate = mask_logits(separate, mg.allowed_mask())
    torch.testing.assert_close(out.logits, separate, rtol=1e-5, atol=1e-5)
    assert (mg(out.tokens, cond) - mg(out.tokens, neg.expand(3))).abs().max() > 1e-2  # CFG acts


def test_cached_decoding_equals_teacher_forcing(mg):
    cond = mg.encode_text(PROMPTS + [""])  # the null row: zero states, mask False
    out = sample(mg, cond, allowed=mg.allowed_mask(), return_logits=True,
                 generator=torch.Generator().manual_seed(2))  # fmt: skip
    forced = score(mg, out.tokens, cond, allowed=mg.allowed_mask()).cond
    torch.testing.assert_close(out.logits, forced, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out.logits[out.logits > MASK_VALUE]).all()


def test_null_condition_matches_musicgens_own_unconditional_inputs(mg):
    null = mg.encode_text([""])
    assert null.states.abs().sum() == 0 and not null.mask.any()
    tokens = sample(mg, null, allowed=mg.allowed_mask(), generator=torch.Generator().manual_seed(4)).tokens
    mine = mg(tokens, null)
    hf_states = torch.zeros(1, 1, mg.text_encoder.config.d_model)  # get_unconditional_inputs
    theirs = mg(tokens, type(null)(hf_states, torch.zeros(1, 1, dtype=torch.bool)))
    torch.testing.assert_close(mine, theirs)


def test_kl_is_zero_at_forced_pad_positions_and_only_the_decoder_trains(mg):
    cond = mg.encode_text(PROMPTS)
    student = mg.fork()
    with torch.no_grad():
        next(student.trainable.parameters()).add_(0.1)
    tokens, _ = generate(student, cond, 1, allowed=mg.allowed_mask())
    s = mask_logits(student(tokens[:, 0], cond), mg.allowed_mask())
    t = mask_logits(mg(tokens[:, 0], cond), mg.allowed_mask())
    pad = ~mg.allowed_mask()[..., : mg.codes].any(-1)  # [K, L]: forced positions
    assert kl_to_teacher(s, t, 0.99).shape == (3,)
    from suite.objectives import token_kl

    kl = token_kl(s[:, 1, pad[1]], t[:, 1, pad[1]], temperature=0.99)
    assert torch.allclose(kl, torch.zeros(3), atol=1e-6)
    assert {type(m).__name__ for m in mg.frozen_modules()} == {"T5EncoderModel", "EncodecModel"}
    assert student.text_encoder is mg.text_encoder and student.trainable is not mg.trainable


def test_audio_is_encodec_at_32k_and_depends_on_the_codes(mg):
    codes = torch.randint(0, 64, (2, 4, 12))
    audio, rate = mg.to_audio(delay(codes, 64))
    assert rate == 32000 and audio.shape == (2, 12 * 640) and torch.isfinite(audio).all()
    assert (audio[0] - audio[1]).norm() > 0.1 * audio[0].norm()


def test_bad_checkpoints_are_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded at run time"):
        build_policy({"name": "musicgen", "checkpoint": str(tmp_path / "nope")})
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"half is not a MusicGen checkpoint: missing model.safetensors"):
        build_policy({"name": "musicgen", "checkpoint": str(tmp_path / "half")})
    with pytest.raises(ValueError, match="either checkpoint"):
        build_policy({"name": "musicgen"})


def _suite(*args: str, tmp: Path):
    return run_suite(*args, tmp=tmp, extra=("generator.frames=16",))


_runs = mlflow_runs


@pytest.mark.slow
def test_fit_merge_and_evaluate_musicgen_through_the_same_commands(tmp_path):
    for beta in (15, 0):
        done = _suite("fit", "--config", "conf/musicgen/tiny.yaml", f"diversity.beta={beta}",
                      "trainer.max_steps=3", "eval_every=3", "data.batch_size=2",
                      f"paths.ckpt_dir={tmp_path / 'ckpt' / str(beta)}",
                      f"model.export_path={tmp_path}/beta{beta}-seed0.safetensors", tmp=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    state, record = load_export(tmp_path / "beta15-seed0.safetensors")
    assert record["policy"] == {"name": "musicgen", "architecture": record["policy"]["architecture"]}
    assert all(k.startswith(("decoder.", "proj.")) for k in state)  # T5 and EnCodec not exported
    done = _suite("test", "--config", "conf/eval_lerp.yaml", "generator=musicgen_tiny", "lambda=0.5",
                  f"checkpoints={tmp_path}", "model.n_vendi_generations=2",
                  "data.eval_prompts=conf/prompts/freeform.txt", tmp=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = _runs(tmp_path)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
    fit = [r for r in runs if r.data.tags.get("stage") == "fit"][0]
    assert fit.data.params["quality_terms"] == "5*mulan (no preference model)"
    assert "eval/quality" in fit.data.metrics and "eval/preference" not in fit.data.metrics
    lerp = [r for r in runs if r.data.tags.get("stage") == "test"][0]
    assert lerp.data.params["beta"] == "0,15" and "eval/kl_teacher" in lerp.data.metrics


@pytest.mark.slow
def test_two_process_cpu_ddp_fit(tmp_path):
    done = _suite("fit", "--config", "conf/musicgen/tiny.yaml", "trainer=ddp_cpu",
                  "trainer.max_steps=2", "trainer.log_every_n_steps=1", "eval_every=2",
                  "data.batch_size=2", "validate_first=false",
                  f"paths.ckpt_dir={tmp_path / 'ckpt'}",
                  f"model.export_path={tmp_path}/ddp.safetensors", tmp=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = _runs(tmp_path)
    assert run.info.status == "FINISHED" and "train/reward_mean" in run.data.metrics
    assert (tmp_path / "ddp.safetensors").is_file()


def test_a_merge_of_decoders_of_different_shapes_is_refused_naming_the_key(tmp_path, mg):
    from suite.policies import musicgen as mgmod
    from suite.policies.exports import save_export, weights_hash
    from suite.policies.recipes import build_merged, load_source

    saved = dict(mgmod.TINY)
    mgmod.TINY["hidden"] = 48
    try:
        wide = build_policy({"name": "musicgen", "tiny": True, "frames": 12})
    finally:
        mgmod.TINY.update(saved)
    base_hash = weights_hash(mg.trainable.state_dict())
    record = {"kind": "student", "policy": {"name": "musicgen", "architecture": wide.architecture()},
              "base_hash": base_hash, "beta": 15}  # fmt: skip
    save_export(wide.trainable.state_dict(), tmp_path / "wide.safetensors", record)
    sources = [load_source("base", mg, base_hash), load_source(str(tmp_path / "wide.safetensors"), mg, base_hash)]
    with pytest.raises(ValueError, match="hidden_size: export 48 vs base 32"):
        build_merged(mg, sources, "lerp", None, 0.5)
    record["policy"]["architecture"] = mg.architecture()  # a record that lies: the weights refuse
    save_export(wide.trainable.state_dict(), tmp_path / "liar.safetensors", record)
    sources[1] = load_source(str(tmp_path / "liar.safetensors"), mg, base_hash)
    with pytest.raises(ValueError, match=r"decoder\.model\.decoder\.embed_tokens\.0\.weight"):
        build_merged(mg, sources, "lerp", None, 0.5)
