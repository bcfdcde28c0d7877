"""Adherence pairs of the base model's generations, labelled by the oracle: the scorer's
generation stage (paper section 3.1, text adherence; issue 18).

The MuLan-style scorer learns text adherence from captioned corpus pieces, but it is used on
GENERATIONS, whose flaws and near misses the corpus does not show: trained on corpus pairs it
ranks generations at Spearman ~0.47 against the oracle's adherence (docs/music_world.md).
The preference judge closed the same gap by learning from generations (`datamodules.
generations`); this DataModule does the same for adherence. It samples theta_init on the
training prompts across the CFG sweep (the same generations as the preference pairs, and the
same cache), has the oracle judge each one's `adherence` to its prompt, and serves
Bradley-Terry pairs (winner, loser) of two generations whose adherence differs by at least
`margin`, each with its own prompt:

- a share `same_prompt` of the pairs are two generations of ONE prompt (the ranking within
  a prompt, where the corpus-trained scorer is weakest);
- the rest are two generations of any two prompts, each judged against its own prompt (the
  ranking the pooled Spearman of `python -m suite diagnose` measures).

Prompts whose attributes the oracle does not recognise (adherence NaN) are left out. The
oracle labels the JUDGE's training pairs, never a policy's. `val_prompts` training prompts
(a seeded draw) give the validation pairs; the diagnostics measure the judge on the
validation prompt split at other seeds.

Batches (after `on_after_batch_transfer`): `{"win": [B, S], "lose": [B, S], "win_cond":
[B, 384], "lose_cond": [B, 384], "win_adherence": [B], "lose_adherence": [B], "win_prompt":
[B], "lose_prompt": [B]}` (the conds are the prompts' frozen MiniLM embeddings; the prompt
ids index the DataModule's prompt list).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from datamodules.generations import GenerationPairsDataModule, draw_pairs


class _AdherencePairs(Dataset):
    def __init__(self, tokens, adherence, prompt, pairs):
        self.tokens, self.adherence, self.prompt, self.pairs = tokens, adherence, prompt, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        w, lo = self.pairs[i].tolist()
        return {"win_tokens": self.tokens[w], "lose_tokens": self.tokens[lo],
                "win_adherence": self.adherence[w], "lose_adherence": self.adherence[lo],
                "win_prompt": self.prompt[w], "lose_prompt": self.prompt[lo]}  # fmt: skip


def draw_same_prompt_pairs(
    value: torch.Tensor, prompt: torch.Tensor, n: int, margin: float, generator: torch.Generator
) -> torch.Tensor:
    """`[n, 2]` (winner, loser) indices of pairs of rows with the same `prompt` whose `value`
    differs by >= margin, drawn uniformly over such pairs."""
    allowed = []
    for p in prompt.unique():  # one prompt's rows at a time: [R, R], not [N, N]
        rows = (prompt == p).nonzero()[:, 0]
        beats = (value[rows, None] - value[None, rows]) >= margin  # [R, R]: row i beats row j
        allowed.append(rows[beats.nonzero()])  # [M_p, 2]
    allowed = torch.cat(allowed) if allowed else torch.empty(0, 2, dtype=torch.long)
    if len(allowed) == 0:
        raise ValueError(
            f"AdherencePairsDataModule: no two generations of one prompt differ in oracle "
            f"adherence by >= margin {margin}; lower the margin, set same_prompt: 0 or sample more"
        )
    pick = torch.randint(0, len(allowed), (n,), generator=generator)
    return allowed[pick]


class AdherencePairsDataModule(GenerationPairsDataModule):
    """Bradley-Terry adherence pairs of base-model generations (module docstring).

    Args as `GenerationPairsDataModule` (`base_lm`, `prompts`, `per_prompt`, `seeds`,
    `negative_prompt`, `temperature`, `margin`, `val_prompts`, `train_pairs`, `val_pairs`,
    `batch_size`, `seed`), plus `same_prompt` in [0, 1], the share of pairs drawn within one
    prompt; `prompts: corpus` with `corpus_prompts` N samples on N distinct captions of the
    training corpus (`corpus_seed`, `n_pieces`; a seeded draw) instead of a prompt set: many
    prompts, so that the scorer cannot learn prompt by prompt; `text_tower` (a
    `suite.models.text_tower.TextTower`) replaces the default in tests.
    """

    def __init__(self, *args, same_prompt: float = 0.5, corpus_prompts: int = 0, corpus_seed: int = 0,
                 n_pieces: int = 20_000, text_tower=None, **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        name = "AdherencePairsDataModule"
        if isinstance(same_prompt, bool) or not (isinstance(same_prompt, (int, float)) and 0 <= same_prompt <= 1):
            raise ValueError(f"{name}: same_prompt must be in [0, 1], got {same_prompt!r}")
        if (self.prompts == "corpus") != (corpus_prompts >= 1):
            raise ValueError(f"{name}: prompts 'corpus' and corpus_prompts >= 1 go together, got prompts "
                             f"{self.prompts!r} with corpus_prompts {corpus_prompts!r}")  # fmt: skip
        self.same_prompt, self._tower = float(same_prompt), text_tower
        self.corpus_prompts, self.corpus_seed, self.n_pieces = int(corpus_prompts), corpus_seed, n_pieces
        self.prompt_cond: torch.Tensor | None = None  # [P, 384]

    def _prompt_list(self) -> list[str]:
        if self.prompts != "corpus":
            return super()._prompt_list()
        from datamodules.pieces import _load_default_corpus

        _, captions = _load_default_corpus(self.n_pieces, self.corpus_seed, self.root)
        distinct = [c for c in dict.fromkeys(captions) if c.strip()]  # "" is the null condition
        if len(distinct) < self.corpus_prompts:
            raise ValueError(f"AdherencePairsDataModule: corpus_prompts={self.corpus_prompts} but the corpus "
                             f"has {len(distinct)} distinct captions")  # fmt: skip
        order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(self.seed))
        return [distinct[i] for i in order[: self.corpus_prompts].tolist()]

    def setup(self, stage: str | None = None) -> None:
        if self._sets:
            return
        prompts = self._prompt_list()
        tokens, judged = self.judged_generations(prompts)
        adherence = judged["adherence"]
        # rows run (seed, condition, prompt, draw): the prompt of row r is (r // n) % P
        prompt_of = (torch.arange(len(tokens)) // self.per_prompt) % len(prompts)
        known = torch.isfinite(adherence)
        judged_prompts = sorted(set(prompt_of[known].tolist()))
        if len(judged_prompts) <= self.val_prompts:
            raise ValueError(
                f"AdherencePairsDataModule: {len(judged_prompts)} prompts in {self.prompts!r} name "
                f"attributes the oracle judges; need more than val_prompts={self.val_prompts}"
            )
        gen = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(judged_prompts), generator=gen)
        held = torch.tensor([judged_prompts[i] for i in order[-self.val_prompts :].tolist()])
        is_val = torch.isin(prompt_of, held)
        for split, rows, n in (("train", known & ~is_val, self.n_train), ("val", known & is_val, self.n_val)):
            idx = rows.nonzero()[:, 0]
            within = round(n * self.same_prompt)
            parts = []
            if within:
                parts.append(draw_same_prompt_pairs(adherence[idx], prompt_of[idx], within, self.margin, gen))
            if n - within:
                parts.append(draw_pairs(adherence[idx], n - within, self.margin, gen))
            pairs = torch.cat(parts)[torch.randperm(n, generator=gen)]
            self._sets[split] = _AdherencePairs(tokens[idx], adherence[idx], prompt_of[idx], pairs)
        if self._tower is None:
            from suite.models.text_tower import default_tower

            self._tower = default_tower()
        self.prompt_cond = self._tower.encode(prompts).float().cpu()  # [P, 384]

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        win, lose = self.render_pair(batch)
        cond = self.prompt_cond.to(win.device)
        return {"win": win, "lose": lose,
                "win_cond": cond[batch["win_prompt"]], "lose_cond": cond[batch["lose_prompt"]],
                **{k: batch[k] for k in ("win_adherence", "lose_adherence", "win_prompt", "lose_prompt")}}  # fmt: skip
