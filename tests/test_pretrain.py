"""lightning_modules/pretrain.py: schedule, diversity, a tiny pretraining run, checkpoints."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_modules.pretrain import (
    PretrainLM,
    cosine_with_warmup,
    load_lm,
    token_hamming_diversity,
)
from suite.models.lm import TokenLM

V, SEQ, K, C = 24, 16, 4, 384
ARCH = dict(vocab_size=V, seq_len=SEQ, d_model=32, n_layers=2, n_heads=4, d_ff=64, n_prefix=1)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine two
    # OpenMP threads contending make training ~20x slower (measured); restore afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_language(n: int, seed: int):
    """Condition k (a fixed random unit vector) determines the sequence (3k + (k+1) n) mod V."""
    directions = torch.nn.functional.normalize(
        torch.randn(K, C, generator=torch.Generator().manual_seed(0)), dim=1
    )
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, K, (n,), generator=g)
    pos = torch.arange(SEQ)
    seqs = (3 * classes[:, None] + (classes[:, None] + 1) * pos) % V
    return [{"tokens": seqs[i], "cond": directions[classes[i]]} for i in range(n)], directions


def toy_judge(tokens: torch.Tensor, prompts: list) -> dict:
    """Share of positions matching the prompt's class sequence (prompts are 'class k')."""
    k = torch.tensor([int(p.split()[1]) for p in prompts])
    ref = (3 * k[:, None] + (k[:, None] + 1) * torch.arange(tokens.shape[1])) % V
    return {"adherence": (tokens == ref).float().mean(dim=1)}


def test_cosine_with_warmup_closed_form():
    assert cosine_with_warmup(0, 10, 110, 0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 10, 110, 0.1) == pytest.approx(1.0)
    assert cosine_with_warmup(10, 10, 110, 0.1) == pytest.approx(1.0)
    assert cosine_with_warmup(60, 10, 110, 0.1) == pytest.approx(0.55)  # half-way: (1 + 0.1) / 2
    assert cosine_with_warmup(35, 10, 110, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_with_warmup(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(500, 10, 110, 0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(0, 0, 100, 0.0) == pytest.approx(1.0)


def test_token_hamming_diversity_matches_pair_loop():
    tokens = torch.randint(0, 3, (5, 4, 7))
    t = tokens.numpy()
    ref = [
        np.mean([np.mean(t[p, i] != t[p, j]) for i in range(4) for j in range(i + 1, 4)])
        for p in range(5)
    ]
    np.testing.assert_allclose(token_hamming_diversity(tokens).numpy(), ref, rtol=1e-6)
    assert token_hamming_diversity(torch.zeros(2, 3, 5, dtype=torch.long)).eq(0).all()
    with pytest.raises(ValueError, match="N >= 2"):
        token_hamming_diversity(torch.zeros(2, 1, 5, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cond_dropout=1.0), r"cond_dropout must be in \[0, 1\), got 1.0"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(betas=(0.9, 1.0)), "betas must be two values"),
        (dict(eval_samples_per_prompt=1), "eval_samples_per_prompt must be >= 2"),
        (dict(eval_gammas=[1.0, -2.0]), "eval_gammas must be all >= 0"),
        (dict(eval_neg_cond=torch.zeros(5)), r"eval_neg_cond must be shape \[384\]"),
    ],
)
def test_bad_hyperparameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PretrainLM(**ARCH, **kwargs)


def _trainer(tmp_path, **kw) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **kw,
    )  # fmt: skip


def test_tiny_pretraining_learns_the_toy_language_and_checkpoints_round_trip(tmp_path):
    L.seed_everything(0, verbose=False)
    train, directions = toy_language(512, seed=1)
    val, _ = toy_language(64, seed=2)
    prompts = [{"prompt": f"class {k}", "cond": directions[k], "index": k} for k in range(K)]
    module = PretrainLM(
        **ARCH, lr=3e-3, warmup_steps=10, max_steps=120, cond_dropout=0.2,
        eval_gammas=[1.0, 2.0], eval_samples_per_prompt=3, judge=toy_judge,
    )  # fmt: skip
    val_batch = next(iter(DataLoader(val, batch_size=64)))
    with torch.no_grad():
        before = module._ce(val_batch).item()
    trainer = _trainer(
        tmp_path,
        max_steps=120,
        val_check_interval=120,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
    )
    trainer.fit(
        module,
        train_dataloaders=DataLoader(train, batch_size=32, shuffle=True),
        val_dataloaders=[DataLoader(val, batch_size=64), DataLoader(prompts, batch_size=4)],
    )
    metrics = trainer.callback_metrics
    after = metrics["val/ce"].item()
    assert after < 0.3 * before, (before, after)
    # The schedule stepped per optimizer step: 120 steps reach the cosine floor.
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(3e-3 * cosine_with_warmup(120, 10, 120, 0.1))
    # Generation eval: the conditioned model follows its prompt far above chance (1 / V).
    assert metrics["val/g1/adherence"].item() > 0.5
    assert 0.0 <= metrics["val/g2/token_diversity"].item() <= 1.0
    assert "val/g1/token_diversity" in metrics

    path = tmp_path / "base.ckpt"
    trainer.save_checkpoint(path)
    tokens, cond = val_batch["tokens"][:8], val_batch["cond"][:8]
    module.eval()
    with torch.no_grad():
        ref = module.model(tokens, cond)
        lm = load_lm(path)
        assert isinstance(lm, TokenLM) and lm.config == module.model.config
        torch.testing.assert_close(lm(tokens, cond), ref, atol=0, rtol=0)
        again = PretrainLM.load_from_checkpoint(path).eval()
        assert again.hparams.betas == (0.9, 0.95)
        torch.testing.assert_close(again.model(tokens, cond), ref, atol=0, rtol=0)
    wrong = TokenLM(**{**ARCH, "d_ff": 96})
    with pytest.raises(
        ValueError, match=r"another architecture \(d_ff: checkpoint 64 vs model 96\)"
    ):
        wrong.load_weights(path)


def test_non_finite_loss_stops_training_with_a_message(tmp_path):
    train, _ = toy_language(32, seed=1)
    module = PretrainLM(**ARCH)
    with torch.no_grad():
        module.model.head.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        _trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(
            module, DataLoader(train, batch_size=8)
        )
