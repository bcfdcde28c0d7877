"""The policy interface with a backbone unlike the music world's (tests/toy_policy.py).

K = 2 codebooks with a delay pattern, cross-attention on `[B, T, D]` word states, an
encoder-decoder split: the sampler, the scorer, the KL and the jobs must all work through
`suite.policies.Policy` alone. The slow test runs the user's commands end to end: a
3-step student fit at two betas, then a LERP merge of their exports in the evaluator.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from suite_cli import mlflow_runs, run_suite
from toy_policy import ToyCodecPolicy

from suite.objectives import token_kl
from suite.policies import build_policy
from suite.policies.exports import load_export
from suite.rollout import generate, kl_to_teacher, sequence_log_probs, teacher_logits
from suite.sampling import MASK_VALUE, sample, score

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["Upbeat jazz piece in C major.", "Rock song.", "A peaceful sunset on a beach"]


@pytest.fixture(scope="module")
def toy() -> ToyCodecPolicy:
    return ToyCodecPolicy(seed=0).eval()


def test_built_from_a_spec_by_module_path_and_seeded():
    a = build_policy({"name": "toy_policy:ToyCodecPolicy", "seed": 3})
    b = build_policy({"name": "toy_policy:ToyCodecPolicy", "seed": 3})
    assert a.num_codebooks == 2 and a.seq_len == a.frames + 1
    for (k, x), (_, y) in zip(a.trainable.state_dict().items(), b.trainable.state_dict().items()):
        assert torch.equal(x, y), k
    with pytest.raises(ValueError, match="nope"):
        build_policy({"name": "toy_policy:nope"})


def test_text_states_vary_in_length_and_null_is_one_state(toy):
    cond = toy.encode_text(PROMPTS + [""])
    assert cond.states.shape[:2] == (4, 6) and cond.mask.sum(1).tolist() == [6, 2, 6, 1]
    assert torch.count_nonzero(cond.states[3]) == 0


def test_incremental_decoding_matches_teacher_forcing(toy):
    cond = toy.encode_text(PROMPTS)
    gen = torch.Generator().manual_seed(0)
    out = sample(toy, cond, temperature=1.0, allowed=toy.allowed_mask(), generator=gen,
                 return_logits=True)  # fmt: skip
    assert out.tokens.shape == (3, 2, toy.seq_len)
    forced = score(toy, out.tokens, cond, allowed=toy.allowed_mask()).cfg  # [B, K, L, V]
    torch.testing.assert_close(out.logits, forced, rtol=1e-5, atol=1e-4)


def test_the_delay_pattern_is_respected_at_every_step(toy):
    cond = toy.encode_text(PROMPTS)
    neg = toy.encode_text(["Bad audio quality."])
    tokens, _ = generate(toy, cond, 4, temperature=2.0, gamma=3.0, neg_cond=neg,
                         allowed=toy.allowed_mask(), generator=torch.Generator().manual_seed(1))  # fmt: skip
    tokens = tokens.reshape(-1, 2, toy.seq_len)  # [P*n, K, L]
    assert (tokens[:, 1, 0] == toy.pad).all() and (tokens[:, 0, -1] == toy.pad).all()
    assert (tokens[:, 0, :-1] < toy.pad).all() and (tokens[:, 1, 1:] < toy.pad).all()


def test_cfg_is_one_batched_forward_over_padded_text_states(toy, monkeypatch):
    cond = toy.encode_text(PROMPTS)  # T = 6
    neg = toy.encode_text(["Bad audio quality."])  # T = 3: padded to 6 in the 2B batch
    calls = []
    start = ToyCodecPolicy.start

    def spy(self, c):
        calls.append(c.batch_size)
        return start(self, c)

    monkeypatch.setattr(ToyCodecPolicy, "start", spy)
    out = sample(toy, cond, neg_cond=neg, gamma=3.0, allowed=toy.allowed_mask(),
                 generator=torch.Generator().manual_seed(2), return_logits=True)  # fmt: skip
    assert calls == [6]
    both = score(toy, out.tokens, cond, neg_cond=neg, gamma=3.0, allowed=toy.allowed_mask())
    alone_neg = toy(out.tokens, neg.expand(3))
    manual = 3.0 * toy(out.tokens, cond) - 2.0 * alone_neg
    manual = manual.masked_fill(~toy.allowed_mask(), MASK_VALUE)
    torch.testing.assert_close(both.cfg, manual, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.logits, both.cfg, rtol=1e-5, atol=1e-4)


def test_kl_and_log_probs_sum_over_codebooks_and_steps(toy):
    cond = toy.encode_text(PROMPTS)
    student = toy.fork()
    with torch.no_grad():
        for p in student.trainable.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tokens, _ = generate(student, cond, 1, allowed=toy.allowed_mask())
    tokens = tokens[:, 0]  # [B, K, L]
    mask = toy.allowed_mask()
    t = teacher_logits(toy, tokens, cond, gamma=1.0, neg_cond=None, allowed=mask)
    s = student(tokens, cond).masked_fill(~mask, MASK_VALUE)
    kl = kl_to_teacher(s, t, 0.99, mask)
    per_codebook = sum(token_kl(s[:, k], t[:, k], temperature=0.99) for k in range(2))
    torch.testing.assert_close(kl, per_codebook)
    logp = torch.log_softmax(s / 0.99, -1).gather(-1, tokens[..., None]).sum((1, 2, 3))
    torch.testing.assert_close(sequence_log_probs(s, tokens, 0.99), logp)


def test_fork_copies_the_decoder_and_shares_the_text_encoder(toy):
    child = toy.fork()
    assert child.text is toy.text and child.trainable is not toy.trainable
    with torch.no_grad():
        next(child.trainable.parameters()).add_(1.0)
    assert not torch.equal(next(child.trainable.parameters()), next(toy.trainable.parameters()))
    assert [type(m).__name__ for m in toy.frozen_modules()] == ["Embedding"]


def test_audio_is_the_undelayed_frames(toy):
    tokens, _ = generate(toy, toy.encode_text(PROMPTS[:1]), 2, allowed=toy.allowed_mask())
    audio, rate = toy.to_audio(tokens[0])
    assert rate == 16000 and audio.shape == (2, toy.frames * 4800) and audio.abs().max() <= 0.5


def _suite(*args: str, tmp: Path):
    return run_suite(*args, tmp=tmp, extra=(
        f"hydra.searchpath=[file://{REPO / 'tests' / 'configs'}]", "generator=toy",
        "data.eval_prompts=conf/prompts/freeform.txt"))  # fmt: skip


@pytest.mark.slow
def test_fit_merge_and_evaluate_a_two_codebook_policy_through_the_same_commands(tmp_path):
    for beta in (15, 0):
        done = _suite("fit", "--config", "conf/beta15.yaml", f"diversity.beta={beta}",
                      "trainer.max_steps=3", "eval_every=3", "data.batch_size=2",
                      f"paths.ckpt_dir={tmp_path / 'ckpt' / str(beta)}",
                      f"model.export_path={tmp_path}/beta{beta}-seed0.safetensors", tmp=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    state, record = load_export(tmp_path / "beta15-seed0.safetensors")
    assert record["kind"] == "student" and record["beta"] == 15.0
    assert record["policy"]["name"] == "toy_policy:ToyCodecPolicy" and record["mlflow_run_id"]
    assert all(k.startswith(("emb.", "bos", "pos", "layers.", "ln.", "heads_out.")) for k in state)
    done = _suite("test", "--config", "conf/eval_lerp.yaml", "lambda=0.5", f"checkpoints={tmp_path}",
                  "model.n_vendi_generations=2", f"model.export_path={tmp_path}/lerp.safetensors",
                  tmp=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    merged = json.loads((tmp_path / "lerp.json").read_text())
    assert merged["method"] == "lerp" and merged["coefficients"] == [0.5, 0.5]
    assert [s["beta"] for s in merged["sources"]] == ["0", "15"]
    runs = mlflow_runs(tmp_path)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
    lerp = [r for r in runs if r.data.tags.get("stage") == "test"][0]
    assert lerp.data.params["beta"] == "0,15" and "eval/kl_teacher" in lerp.data.metrics
    assert "eval/oracle_quality" not in lerp.data.metrics  # no oracle in this world: none faked
