"""The chunked KL of eq. (2) (suite.rollout.chunked_scores) against whole-sequence scoring.

Chunking changes memory, never the maths: the KL to the CFG teacher, the sequence
log-probs of eq. (4), the entropy and the gradient through the student must equal the
whole-sequence computation (up to float summation order), for the music world's policy
(K = 1) and MusicGen's (K = 4 with a delay pattern), with and without a negative prompt.
"""

from __future__ import annotations

import pytest
import torch

from suite.models.lm import TokenLM
from suite.music.tokens import SEQ_LEN, VOCAB_SIZE
from suite.policies import build_policy
from suite.policies.music import MusicPolicy
from suite.rollout import (
    chunked_scores,
    generate,
    kl_to_teacher,
    masked,
    policy_entropy,
    sequence_log_probs,
    teacher_logits,
)


def _music():
    torch.manual_seed(0)
    lm = TokenLM(VOCAB_SIZE, SEQ_LEN, d_model=32, n_layers=1, n_heads=2, d_ff=64, n_prefix=2)
    return MusicPolicy(lm, encode=lambda ps: torch.stack(
        [torch.randn(384, generator=torch.Generator().manual_seed(len(p))) * bool(p) for p in ps]))  # fmt: skip


def _musicgen():
    return build_policy({"name": "musicgen", "tiny": True, "frames": 10})


@pytest.mark.parametrize("make", [_music, _musicgen], ids=["music", "musicgen"])
@pytest.mark.parametrize("gamma, chunk, reduce", [(3.0, 7, "sum"), (1.0, 4, "mean"), (3.0, 1000, "sum")])
def test_chunked_scores_equal_whole_sequence_scores_and_gradients(make, gamma, chunk, reduce):
    teacher = make().eval()
    student = teacher.fork()
    with torch.no_grad():
        for p in student.trainable.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    cond = student.encode_text(["Rock song.", "A sad piano ballad", "Jazz"])
    neg = teacher.encode_text(["Bad audio quality."])
    allowed = teacher.allowed_mask()
    tokens, _ = generate(student, cond, 1, allowed=allowed, generator=torch.Generator().manual_seed(1))
    tokens = tokens[:, 0]  # [R, K, L]
    T = 0.99

    t = teacher_logits(teacher, tokens, cond, gamma=gamma, neg_cond=neg, allowed=allowed)
    s = masked(student(tokens, cond), allowed)
    kl = kl_to_teacher(s, t, T, reduce=reduce)
    logp = sequence_log_probs(s, tokens, T)
    ent = policy_entropy(s, T).mean()
    (kl.sum() + logp.sum()).backward()
    whole = [p.grad.clone() for p in student.trainable.parameters()]
    student.trainable.zero_grad()

    kl_c, logp_c, ent_c = chunked_scores(student, teacher, tokens, cond, gamma=gamma, neg_cond=neg,
                                         temperature=T, allowed=allowed, chunk=chunk, reduce=reduce)  # fmt: skip
    (kl_c.sum() + logp_c.sum()).backward()
    torch.testing.assert_close(kl_c, kl, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logp_c, logp, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ent_c, ent, rtol=1e-5, atol=1e-6)
    for g, w in zip([p.grad for p in student.trainable.parameters()], whole):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    assert all(p.grad is None for p in teacher.trainable.parameters())


def test_the_student_step_with_kl_chunk_equals_the_whole_step(tmp_path):
    from student_common import prompt_batch, ready, save_checkpoints

    ckpts = save_checkpoints(tmp_path)
    batch = prompt_batch(3)
    losses = []
    for chunk in (None, 16):
        m = ready(ckpts, kl_chunk=chunk, beta=15.0)
        loss, stats = m.distill_step(batch)
        loss.backward()
        losses.append((loss.detach(), stats, [p.grad.clone() for p in m.student.parameters()]))
    (l0, s0, g0), (l1, s1, g1) = losses
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-4)
    for key in ("train/kl", "train/entropy", "train/logprob", "train/reward_mean"):
        assert s1[key] == pytest.approx(s0[key], rel=1e-4, abs=1e-4), key
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_kl_chunk_is_refused_for_a_policy_that_does_not_split_its_forward(tmp_path):
    from student_common import make, save_checkpoints

    ckpts = save_checkpoints(tmp_path)
    with pytest.raises(ValueError, match="kl_chunk must be an int >= 1, got 0"):
        make(ckpts, kl_chunk=0)
    m = make(ckpts, kl_chunk=8, policy={"name": "toy_policy:ToyCodecPolicy", "seed": 0})
    with pytest.raises(ValueError, match="kl_chunk=8 needs a policy that splits its forward"):
        m.setup("fit")
