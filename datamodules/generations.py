"""Preference pairs from the base model's own generations, labelled by the oracle.

The paper's acoustic-quality judge is a user-preference reward model learned from raters'
pairwise judgments of GENERATED music (section 3.1, after MusicRL). The embedded world's
raters are the oracle: this DataModule samples the base model theta_init on training
prompts across a CFG sweep (`suite.judge_diagnostics.SWEEP`: no CFG, negative prompt at
gamma 1.5 / 3 / 5, unconditional at gamma 3 / 5, so that the generations span the quality
range the evaluated models reach), has the oracle judge each one (`quality`, section
"Oracle judge" of docs/music_world.md) and serves Bradley-Terry pairs (winner, loser): two
generations whose oracle quality differs by at least `margin` (closer pairs are the
raters' coin flips), the better one the winner.

The oracle labels the JUDGE's training pairs, as raters labelled the paper's; it is never a
training signal of a policy. Held-out checks stay held out: `val_prompts` of the training
prompts (a seeded draw) give the validation pairs, and `python -m suite diagnose` measures
the judge on the VALIDATION prompt split at other sampling seeds.

Batches (after `on_after_batch_transfer`, on the model's device):
`{"win": [B, S], "lose": [B, S], "win_quality": [B], "lose_quality": [B]}`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

# Part of the generation cache's key: bump it when the sampler or the oracle changes what the
# same theta_init and arguments give.
CACHE_VERSION = 1


class _Pairs(Dataset):
    def __init__(self, tokens: torch.Tensor, quality: torch.Tensor, pairs: torch.Tensor):
        self.tokens, self.quality, self.pairs = tokens, quality, pairs  # pairs [P, 2]: (win, lose)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        w, lo = self.pairs[i].tolist()
        return {"win_tokens": self.tokens[w], "lose_tokens": self.tokens[lo],
                "win_quality": self.quality[w], "lose_quality": self.quality[lo]}  # fmt: skip


def draw_pairs(quality: torch.Tensor, n: int, margin: float, generator: torch.Generator) -> torch.Tensor:
    """`[n, 2]` (winner, loser) indices of random pairs whose `quality` differs by >= margin."""
    out, total = [], 0
    for _ in range(1000):  # each round keeps the pairs that pass; stops when n are found
        i = torch.randint(0, len(quality), (2 * n,), generator=generator)
        j = torch.randint(0, len(quality), (2 * n,), generator=generator)
        keep = (quality[i] - quality[j]).abs() >= margin
        i, j = i[keep], j[keep]
        better = quality[i] > quality[j]
        out.append(torch.stack([torch.where(better, i, j), torch.where(better, j, i)], dim=1))
        total += int(keep.sum())
        if total >= n:
            return torch.cat(out)[:n]
    raise ValueError(
        f"GenerationPairsDataModule: fewer than {n} pairs of generations differ in oracle "
        f"quality by >= margin {margin} (found {total}); lower the margin or sample more"
    )


class GenerationPairsDataModule(L.LightningDataModule):
    """Bradley-Terry pairs of base-model generations judged by the oracle (module docstring).

    Args: `base_lm`, theta_init (a checkpoint path or a base_lm artifact spec, built if
    missing); `prompts`, a named prompt set or a file (the training split by default);
    `per_prompt` generations per prompt, condition and seed; `seeds` of the sampler (each
    condition k of the sweep samples with seed + k); `negative_prompt` of the sweep's
    negative-prompt CFG; `margin`; `val_prompts` prompts held out for validation;
    `train_pairs` / `val_pairs` pairs drawn once (seeded by `seed`). `policy` (a
    MusicPolicy) replaces `base_lm` in tests.
    """

    def __init__(
        self,
        base_lm=None,
        prompts: str = "train",
        per_prompt: int = 4,
        seeds: Sequence[int] = (1000, 2000, 3000),
        negative_prompt: str = "Bad audio quality.",
        temperature: float = 0.99,
        margin: float = 0.05,
        val_prompts: int = 32,
        train_pairs: int = 100_000,
        val_pairs: int = 500,
        batch_size: int = 32,
        seed: int = 0,
        root: str | None = None,
        policy=None,
        render=None,
    ):
        super().__init__()
        name = "GenerationPairsDataModule"
        if base_lm is None and policy is None:
            raise ValueError(f"{name}: needs base_lm (a checkpoint path or a base_lm artifact spec)")
        if per_prompt < 1 or not seeds or batch_size < 1:
            raise ValueError(f"{name}: need per_prompt >= 1, at least one seed and batch_size >= 1, "
                             f"got {per_prompt}, {list(seeds)}, {batch_size}")  # fmt: skip
        if not 0 <= margin < 1:
            raise ValueError(f"{name}: margin must be in [0, 1) (oracle quality is in [0, 1]), got {margin}")
        if val_prompts < 1 or train_pairs < 1 or val_pairs < 1:
            raise ValueError(f"{name}: val_prompts, train_pairs and val_pairs must be >= 1")
        self.base_lm, self.prompts, self.per_prompt = base_lm, prompts, per_prompt
        self.seeds, self.negative_prompt, self.temperature = [int(s) for s in seeds], negative_prompt, temperature
        self.margin, self.val_prompts, self.n_train, self.n_val = margin, val_prompts, train_pairs, val_pairs
        self.batch_size, self.seed, self.root = batch_size, seed, root
        self._policy, self._render = policy, render
        self._lm_path: Path | None = None  # theta_init's file, once prepare_data resolved it
        self._sets: dict[str, _Pairs] = {}

    def prepare_data(self) -> None:
        if self._policy is None:
            from lightning_modules.artifacts import resolve

            self._lm_path = resolve("base_lm", self.base_lm)  # builds it if missing

    def _load_policy(self):
        if self._policy is None:
            from suite.policies.music import MusicPolicy

            if self._lm_path is None:
                self.prepare_data()
            self._policy = MusicPolicy.from_spec(str(self._lm_path))
        return self._policy

    def _prompt_list(self) -> list[str]:
        from suite.music.prompts import PROMPT_SETS, load_prompt_records, prompt_set

        path = prompt_set(self.prompts, self.root) if self.prompts in PROMPT_SETS else Path(self.prompts)
        if not path.is_file():
            raise FileNotFoundError(f"GenerationPairsDataModule: prompt file not found: {path}")
        return [r["prompt"] for r in load_prompt_records(path)]

    def generate(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens `[N, L]` and oracle quality `[N]` of every (seed, condition, prompt, draw)."""
        tokens, judged = self.judged_generations(prompts)
        return tokens, judged["quality"]

    def judged_generations(self, prompts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Tokens `[N, L]` and the oracle's `quality` and `adherence` `[N]` (NaN where it
        recognises no attribute of the prompt) of every (seed, condition, prompt, draw).
        With theta_init from a file, the result is cached under `<artifacts>/generations/`,
        keyed by the file's content and every argument that shapes the samples, so the
        preference model and the scorer's generation stage sample once between them."""
        cache = self._cache_file(prompts)
        if cache is not None and cache.is_file():
            saved = torch.load(cache, weights_only=True)
            return saved["tokens"], {k: saved[k] for k in ("quality", "adherence")}
        tokens, judged = self._sample(prompts)
        if cache is not None:  # written whole or not at all: a killed run leaves no half file
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            torch.save({"tokens": tokens, **judged}, tmp)
            os.replace(tmp, cache)
        return tokens, judged

    def _cache_file(self, prompts: list[str]) -> Path | None:
        if self._lm_path is None and self._policy is None:
            self.prepare_data()
        if self._lm_path is None:  # a policy object (tests): nothing to key the cache on
            return None
        from suite.artifacts import default_root
        from suite.judge_diagnostics import SWEEP

        digest = hashlib.sha256(self._lm_path.read_bytes())
        key = [CACHE_VERSION, self.per_prompt, self.seeds, self.negative_prompt, self.temperature, list(SWEEP), prompts]
        digest.update(json.dumps(key).encode())
        return default_root() / "generations" / f"{digest.hexdigest()[:16]}.pt"

    @torch.no_grad()
    def _sample(self, prompts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from suite.judge_diagnostics import SWEEP
        from suite.world_diagnostics import sample_cfg_at

        policy = self._load_policy()
        cond = policy.encode_text(prompts).repeat_interleave(self.per_prompt)
        every = torch.ones(policy.seq_len, dtype=torch.bool)
        tokens, judged = [], {"quality": [], "adherence": []}
        runs = [(s, k, c) for s in self.seeds for k, c in enumerate(SWEEP)]
        for seed, k, (_, use_negative, gamma) in tqdm(runs, desc="generations of theta_init", unit="batch"):
            neg = policy.encode_text([self.negative_prompt if use_negative else ""])
            out = sample_cfg_at(policy, cond, neg, gamma, every, self.temperature, seed + k)  # [P*n, 1, L]
            scores = policy.oracle.scores(out.view(len(prompts), self.per_prompt, *out.shape[1:]), prompts)
            tokens.append(out[:, 0].cpu())
            for key, values in judged.items():
                values.append(scores[key].reshape(-1).float())
        return torch.cat(tokens), {key: torch.cat(values) for key, values in judged.items()}

    def setup(self, stage: str | None = None) -> None:
        if self._sets:
            return
        prompts = self._prompt_list()
        if len(prompts) <= self.val_prompts:
            raise ValueError(f"GenerationPairsDataModule: {len(prompts)} prompts in {self.prompts!r}; "
                             f"need more than val_prompts={self.val_prompts}")  # fmt: skip
        gen = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(prompts), generator=gen)
        held = set(order[-self.val_prompts :].tolist())
        tokens, quality = self.generate(prompts)
        # rows run (seed, condition, prompt, draw): the prompt of row r is (r // n) % P
        prompt_of = (torch.arange(len(tokens)) // self.per_prompt) % len(prompts)
        is_val = torch.tensor([int(p) in held for p in prompt_of])
        for split, rows, n in (("train", ~is_val, self.n_train), ("val", is_val, self.n_val)):
            idx = rows.nonzero()[:, 0]
            pairs = draw_pairs(quality[idx], n, self.margin, gen)
            self._sets[split] = _Pairs(tokens[idx], quality[idx], pairs)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._sets["train"], batch_size=self.batch_size, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(self.seed))  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._sets["val"], batch_size=self.batch_size, shuffle=False)

    def render_pair(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The audio `[B, S]` of a batch's `win_tokens` and `lose_tokens`, rendered together."""
        if self._render is None:
            from suite.music.render import render

            self._render = render
        b = len(batch["win_tokens"])
        audio = self._render(torch.cat([batch["win_tokens"], batch["lose_tokens"]]))  # [2B, S]
        return audio[:b], audio[b:]

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        win, lose = self.render_pair(batch)
        return {"win": win, "lose": lose,
                "win_quality": batch["win_quality"], "lose_quality": batch["lose_quality"]}  # fmt: skip
