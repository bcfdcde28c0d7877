"""The embedded music world's generator behind the policy interface (DESIGN.md section 5).

`MusicPolicy` wraps the world's `TokenLM` (a decoder-only LM with a text prefix) as the
smallest instance of `suite.policies.Policy`: K = 1 codebook of L = 169 grammar tokens,
text conditioning as the frozen MiniLM sentence vector (T = 1 state of D = 384; the empty
prompt is the all-zero null row that TokenLM replaces by its learned null prefix), the
grammar mask as the validity mask, the batched synthesiser as `to_audio`, the rule-based
oracle as the judge, MIDI beside each WAV, and clean corpus pieces as FAD's reference.
The whole TokenLM is the trainable part.

Nothing here changes the numbers: every method calls the TokenLM / renderer / oracle
the suite used before the interface existed, adding or removing the K = 1 axis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from suite.models.lm import CONFIG_KEYS, KVCache, TokenLM
from suite.models.lm_checkpoint import load_lm
from suite.policies.base import Policy, TextCond


def _default_encoder() -> Callable[[Sequence[str]], torch.Tensor]:
    from suite.models.text_tower import default_tower

    return default_tower().encode


class MusicOracle:
    """The world's oracle judge over `[P, N, 1, L]` tokens (`suite.music.oracle`)."""

    def scores(self, tokens: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        from suite.music import oracle

        if tokens.dim() != 4 or tokens.shape[2] != 1:
            raise ValueError(f"MusicOracle: tokens must be [P, N, 1, L], got {tuple(tokens.shape)}")
        if len(prompts) != tokens.shape[0]:
            raise ValueError(
                f"MusicOracle: {tokens.shape[0]} prompts of generations but {len(prompts)} prompts"
            )
        P, n = tokens.shape[:2]
        attrs = [oracle.parse_prompt(p) for p in prompts]
        rows = [a for a in attrs for _ in range(n)]
        judged = oracle.judge_batch(tokens.reshape(P * n, -1), rows)
        nan = float("nan")

        def table(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float64).view(P, n)

        return {
            "quality": table([j.quality for j in judged]),
            # NaN where the oracle recognises no attribute of the prompt (some free-form
            # prompts): such prompts must not count as perfectly adhered to.
            "adherence": table([j.adherence_mean if j.adherence else nan for j in judged]),
            "overall": table([j.overall for j in judged]),
        }

    def pair_distances(self, tokens: torch.Tensor) -> torch.Tensor:
        from suite.music import oracle

        rows = tokens[:, :, 0].detach().cpu().numpy()  # [P, N, L]
        out = []
        for gens in rows:
            pairs = [(i, j) for i in range(len(gens)) for j in range(i + 1, len(gens))]
            out.append(sum(oracle.distance(gens[i], gens[j]) for i, j in pairs) / len(pairs))
        return torch.tensor(out, dtype=torch.float64)


class TokenLMPolicy(Policy):
    """A bare TokenLM as a K = 1 policy: conditioned on given sentence vectors, no audio.

    What pretraining's generation evals need (`lightning_modules.pretrain`): sampling and
    scoring of a TokenLM of any vocabulary and length. `MusicPolicy` adds the world.
    """

    TRAINABLE = "lm"

    def __init__(self, lm: TokenLM, allowed: torch.Tensor | None = None):
        super().__init__()
        if not isinstance(lm, TokenLM):
            raise TypeError(f"{type(self).__name__}: lm must be a TokenLM, got {type(lm).__name__}")
        self.lm = lm
        self.num_codebooks, self.seq_len, self.vocab_size = 1, lm.seq_len, lm.vocab_size
        self.sample_rate = 0
        mask = None if allowed is None else allowed.reshape(1, lm.seq_len, lm.vocab_size).clone()
        self.register_buffer("_allowed", mask, persistent=False)  # [1, L, V]

    @classmethod
    def from_spec(cls, checkpoint: str, expected_config: dict | None = None) -> TokenLMPolicy:
        return cls(load_lm(checkpoint, expected_config=expected_config))

    def architecture(self) -> dict[str, Any]:
        return {k: self.lm.config[k] for k in CONFIG_KEYS if k != "dropout"}

    def encode_text(self, prompts: Sequence[str]) -> TextCond:
        raise NotImplementedError(
            "TokenLMPolicy has no text encoder: pass sentence vectors to cond_from_vectors"
        )

    def cond_from_vectors(self, vectors: torch.Tensor) -> TextCond:
        """Sentence vectors `[B, C]` (zeros = null) as a T = 1 TextCond on the model's device."""
        device = self.lm.pos_emb.device
        vectors = vectors.to(device=device, dtype=torch.float32)
        mask = torch.ones(vectors.shape[0], 1, dtype=torch.bool, device=device)
        return TextCond(vectors[:, None, :], mask)

    @staticmethod
    def _vectors(cond: TextCond) -> torch.Tensor:
        return cond.states[:, 0]  # [B, C]

    def start(self, cond: TextCond) -> tuple[KVCache, torch.Tensor]:
        cache, logits = self.lm.start(self._vectors(cond).to(self.lm.pos_emb.dtype))
        return cache, logits[:, None]  # [B, 1, V]

    def step(self, tokens: torch.Tensor, state: KVCache) -> torch.Tensor:
        return self.lm.step(tokens[:, 0], state)[:, None]  # [B, 1, V]

    def forward(self, tokens: torch.Tensor, cond: TextCond) -> torch.Tensor:
        if tokens.dim() != 3 or tokens.shape[1] != 1:
            raise ValueError(
                f"{type(self).__name__}: tokens must be [B, 1, L], got {tuple(tokens.shape)}"
            )
        return self.lm(tokens[:, 0], self._vectors(cond))[:, None]  # [B, 1, L, V]

    def hidden(self, tokens: torch.Tensor, cond: TextCond) -> torch.Tensor:
        return self.lm.hidden_states(tokens[:, 0], self._vectors(cond))  # [B, L, D]

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm._head(hidden)[:, None]  # [B, 1, l, V]

    def allowed_mask(self) -> torch.Tensor | None:
        return self._allowed

    def to_audio(self, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
        raise NotImplementedError("TokenLMPolicy has no renderer; use MusicPolicy")


class MusicPolicy(TokenLMPolicy):
    """TokenLM + text tower + renderer of the music world (module docstring).

    Args:
        lm: the TokenLM (its vocabulary and length must be the world's).
        encode: prompts -> `[B, 384]` sentence vectors ("" -> zeros); default: the shared
            MiniLM tower with its prompt cache (the prompt DataModule's, so vectors agree).
        use_grammar_mask: mask every position to its token type (teacher and student alike).
    """

    ARTIFACTS = {"checkpoint": "base_lm"}

    def __init__(
        self,
        lm: TokenLM,
        encode: Callable[[Sequence[str]], torch.Tensor] | None = None,
        use_grammar_mask: bool = True,
    ):
        from suite.music.render import SAMPLE_RATE
        from suite.music.tokens import SEQ_LEN, VOCAB_SIZE, allowed_mask

        if isinstance(lm, TokenLM) and (lm.vocab_size != VOCAB_SIZE or lm.seq_len != SEQ_LEN):
            raise ValueError(
                f"MusicPolicy: the TokenLM has vocab_size={lm.vocab_size}, seq_len={lm.seq_len}; "
                f"the music world needs vocab_size={VOCAB_SIZE}, seq_len={SEQ_LEN}"
            )
        super().__init__(lm, allowed_mask() if use_grammar_mask else None)
        self.sample_rate = SAMPLE_RATE
        self._encode = encode
        self._oracle = MusicOracle()

    @classmethod
    def from_spec(
        cls, checkpoint: str, use_grammar_mask: bool = True, expected_config: dict | None = None
    ) -> MusicPolicy:
        """From a TokenLM file (`TokenLM.save`, a PretrainLM checkpoint or a built artifact)."""
        from suite.models.text_tower import COND_DIM

        lm = load_lm(checkpoint, expected_config=expected_config)
        if lm.cond_dim != COND_DIM:
            raise ValueError(
                f"MusicPolicy: {checkpoint} has cond_dim={lm.cond_dim}, the text tower gives "
                f"{COND_DIM}"
            )
        return cls(lm, use_grammar_mask=use_grammar_mask)

    def encode_text(self, prompts: Sequence[str]) -> TextCond:
        encode = self._encode or _default_encoder()
        return self.cond_from_vectors(encode(list(prompts)).float())  # "" -> the null row

    # ------------------------------------------------------------------ audio and world
    def to_audio(self, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
        from suite.music.render import render

        return render(tokens[:, 0]), self.sample_rate  # [B, S]

    @property
    def oracle(self) -> MusicOracle:
        return self._oracle

    def write_extras(self, tokens: torch.Tensor, stem: Path) -> list[Path]:
        from suite.music.midi import write_midi

        return [write_midi(tokens[0].detach().cpu(), stem.with_suffix(".mid"))]

    def reference_audio(self, size: int, seed: int, root: str | None) -> torch.Tensor:
        """The first `size` flaw-free pieces of corpus `seed`, rendered: `[size, S]`.

        Every job trains on corpus seed 0; piece i of seed s comes from its own generator
        `default_rng([s, i])`, so another seed shares no piece with training. The pool
        composed is eight times `size`: about a fifth of pieces are flaw-free (worlds 3 and 4: each
        half bar flawed with odds 1/3: (2/3) ** 4 = 0.20).
        """
        from suite.music.corpus import build_corpus
        from suite.music.render import render

        pool = build_corpus(seed=int(seed), n=8 * int(size), root=root, progress=False)
        clean = [i for i, flawed in enumerate(pool.flawed) if not flawed][:size]
        if len(clean) < size:
            raise ValueError(
                f"MusicPolicy: the FAD reference needs {size} clean pieces but corpus seed {seed} "
                f"has only {len(clean)} in its first {8 * size}; lower fad_reference_size"
            )
        tokens = torch.as_tensor(pool.tokens[clean], dtype=torch.long)  # [size, L]
        return torch.cat([render(tokens[i : i + 32]) for i in range(0, size, 32)])
