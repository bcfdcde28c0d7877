"""Audio DataModules for the embedder, the MuLan-style scorer and the preference model.

Paper appendix D.1 trains the diversity embedder E on fixed-length clips where positives are
non-overlapping chunks of the same recording and negatives come from other recordings,
augmented with noise, tempo and pitch shifts. Section 3.1's quality metrics (MuLan score,
user preference) need (caption, audio) pairs and preference pairs. Here all audio is
rendered ON THE FLY from music-world tokens (`suite.music.render.render`), after the batch
reaches its device (`on_after_batch_transfer`), so rendering runs on the GPU when there is
one and no audio cache is needed.

Token-level augmentations (re-render rather than resample, so tempo and pitch move
independently and the audio stays artefact-free):
- pitch shift: `transpose_tokens` moves melody, bass, chords and the key header by k
  semitones (notes leaving a track's range fold back by an octave);
- tempo shift: `shift_tempo` moves the tempo header by +-1 bucket (the renderer plays each
  bucket at its BPM, so the piece speeds up or slows down);
- noise: white noise at a random SNR, added after rendering.

Embedder pairs (`pair_augment`): "shared" (default) gives both chunks of a piece ONE pitch and
tempo shift and each chunk its own noise; "independent" draws pitch, tempo and noise per
chunk. Shared is the default because independent shifts teach E to ignore key and tempo,
which tell pieces apart and which the diversity reward should count as musical
differences: at 500 steps (batch 32) same-piece recall@1 was 0.56 with independent shifts
and 0.73 without pitch/tempo shifts; shared shifts still diversify the training pieces
(measured in the session-2 note of issue 6).

Recording augmentation (`recording_augment`, for E): each chunk of a pair is cut from its
own rendering of the piece with a recording quality drawn independently (clean, noisy,
distorted, lo-fi), in training and in validation, so same-piece pairs differ in recording
and E cannot use the recording as the piece's identity (the world's fairness rule).

Preference pairs (`make_flawed`, `datamodules.flawed`): a clean piece (clean recording, every step "ok") against a
flawed rendition of the SAME piece with flaws inside a random subset of its half-bar segments
(as the composer's, since world version 3): a burst of badly recorded steps per flawed segment,
per-step performance flaws (early / late / dropout / detuned), and/or wrong notes (melody
notes moved a semitone).

Transposed twins and key/mode labels (`transposed_negatives`, for E): pitch-aware extras of
E's batches, `datamodules.pitch_negatives`.

Hard negatives (`hard_share`, for E): that share of each training batch comes from one
genre-tempo cell, the rest uniformly (`datamodules.batching`), so the batch's semi-hard
negatives include pieces that differ only in their finer music.

Chunks (embedder): pieces render to `AUDIO_SAMPLES` (6 s); the two chunks of a piece are
taken at random non-overlapping offsets when 2 clips fit, else at the start and the end of
the piece (then they overlap by 2 * clip - S samples; the `paper` 4-s clip on 6-s pieces
does this, the `tiny` 3-s clip does not).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from datamodules.batching import CellBatchSampler, genre_tempo_cells
from datamodules.flawed import (  # noqa: F401 (re-exported)
    flawed_segments,
    is_clean,
    make_flawed,
    recording_runs,
)
from datamodules.pieces import (  # noqa: F401 (re-exported)
    _Indexed,
    _load_default_corpus,
    add_noise,
    held_out_count,
    held_out_split,
)
from datamodules.pitch_negatives import key_mode_labels, transposed_twins
from datamodules.swap_negatives import SwapNegatives, attribute_codes, check_swap_options
from suite.music import attributes as A
from suite.music import tokens as T
from suite.music.edits import (  # noqa: F401 (re-exported)
    _header_pos,
    shift_tempo,
    transpose_tokens,
    with_recording,
)

Renderer = Callable[[torch.Tensor], torch.Tensor]


class AudioDataModule(L.LightningDataModule):
    """Rendered-audio batches for `task` in {"embedder", "scorer", "preference"}.

    Batches (after `on_after_batch_transfer`, i.e. on the model's device):
    - embedder, train: `{"audio": [2P + M, clip], "label": [2P + M], "key": [2P + M],
      "mode": [2P + M]}` (two chunks per piece, independently augmented, then M transposed
      twins with `transposed_negatives`; key and mode of each chunk as codes,
      `datamodules.pitch_negatives`); val: `{"audio_a": [P, clip], "audio_b": [P, clip],
      "label": [P], "key": [P], "mode": [P]}` without augmentation;
    - scorer: `{"audio": [B, S], "cond": [B, 384], "caption": list[str], "index": [B]}`;
      with `swap_draws` > 0 training batches caption each piece with one of its swap draws
      and add `"negative_cond": [B, 6, 384]`, `"negative_mask": [B, 6]`, with
      `attribute_positives` also `"positives": [B, B]` (caption j describes piece i), with
      `near_misses` `"near_misses": [B, B]` (piece i lacks one value caption j names);
      with `attribute_labels` training batches add `"labels": [B, A]`, each piece's
      attribute values as codes (`label_keys`, `label_sizes`)
      (`datamodules.swap_negatives`; validation keeps the corpus captions);
    - preference: `{"win": [B, S], "lose": [B, S], "index": [B]}` (clean over flawed).

    Data: pass `tokens` `[N, L]` (+ `captions` for the scorer, + `attrs` for its swap
    draws), or leave them None to build
    the music-world corpus (`n_pieces`, `corpus_seed`; cached under `<root>/artifacts/`).
    The last `val_pieces` pieces of a seeded permutation are held out (at most 500, as in
    the issue).
    """

    def __init__(
        self,
        task: str = "embedder",
        tokens: torch.Tensor | None = None,
        captions: Sequence[str] | None = None,
        attrs: Sequence[dict] | None = None,
        n_pieces: int = 4000,
        corpus_seed: int = 0,
        root: str | None = None,
        val_pieces: int = 500,
        batch_size: int = 32,
        clip_seconds: float = 3.0,
        augment: bool = True,
        max_transpose: int = 2,
        max_tempo_shift: int = 1,
        snr_db: Sequence[float] = (10.0, 40.0),
        pair_augment: str = "shared",
        recording_augment: bool = False,
        hard_share: float = 0.0,
        transposed_negatives: float = 0.0,
        swap_draws: int = 0,
        attribute_positives: bool = False,
        near_misses: bool = False,
        attribute_labels: bool = False,
        seed: int = 0,
        render: Renderer | None = None,
        text_tower=None,
    ):
        super().__init__()
        if task not in ("embedder", "scorer", "preference"):
            raise ValueError(
                f"AudioDataModule: task must be embedder/scorer/preference, got {task!r}"
            )
        if batch_size < 2:
            raise ValueError(f"AudioDataModule: batch_size must be >= 2, got {batch_size}")
        if not 0 < clip_seconds:
            raise ValueError(f"AudioDataModule: clip_seconds must be > 0, got {clip_seconds}")
        if pair_augment not in ("shared", "independent"):
            raise ValueError(
                f"AudioDataModule: pair_augment must be 'shared' or 'independent', "
                f"got {pair_augment!r}"
            )
        if len(snr_db) != 2 or snr_db[0] > snr_db[1]:
            raise ValueError(f"AudioDataModule: snr_db must be (low, high), got {snr_db!r}")
        if not 0 <= hard_share <= 1 or (hard_share and task != "embedder"):
            raise ValueError(
                f"AudioDataModule: hard_share must be in [0, 1] and only for the embedder task, "
                f"got {hard_share!r} for task {task!r}"
            )
        check_swap_options("AudioDataModule", swap_draws, attribute_positives, near_misses)
        twins = transposed_negatives
        if twins and (
            task != "embedder" or not 0 < twins <= 1 or round(twins * batch_size) < 1
            or pair_augment == "independent"
        ):
            raise ValueError(
                f"AudioDataModule: transposed_negatives must be in (0, 1] with at least one "
                f"twin per batch (share x batch_size >= 0.5), only for the embedder task with "
                f"shared pair shifts; got {twins!r} (batch_size {batch_size}, task {task!r}, "
                f"pair_augment {pair_augment!r})"
            )
        self.transposed_negatives = float(transposed_negatives)
        if swap_draws and task != "scorer":
            raise ValueError(
                f"AudioDataModule: swap_draws is only for the scorer task, got {swap_draws!r} "
                f"for task {task!r}"
            )
        if not isinstance(attribute_labels, bool) or (attribute_labels and task != "scorer"):
            raise ValueError(
                f"AudioDataModule: attribute_labels must be true or false and is only for the "
                f"scorer task, got {attribute_labels!r} for task {task!r}"
            )
        self.attribute_labels = attribute_labels
        self.labels: torch.Tensor | None = None  # [N, A] attribute codes, with attribute_labels
        self.label_keys: list[str] = []
        self.label_sizes: list[int] = []
        self.hard_share, self.swap_draws = float(hard_share), swap_draws
        self.attribute_positives, self.near_misses = attribute_positives, near_misses
        self._attrs = None if attrs is None else list(attrs)
        self.swaps = None
        self.task, self.batch_size, self.seed = task, batch_size, seed
        self.n_pieces, self.corpus_seed, self.root = n_pieces, corpus_seed, root
        self.val_pieces, self.clip_seconds, self.augment = val_pieces, clip_seconds, augment
        self.max_transpose, self.max_tempo_shift = max_transpose, max_tempo_shift
        self.snr_db = (float(snr_db[0]), float(snr_db[1]))
        self.pair_augment = pair_augment
        self.recording_augment = bool(recording_augment)
        self._tokens = None if tokens is None else torch.as_tensor(tokens).long()
        self._captions = None if captions is None else list(captions)
        self._render = render
        self._tower = text_tower
        self._gen = torch.Generator().manual_seed(seed)
        self.cond: torch.Tensor | None = None

    def _code_labels(self, n: int) -> None:
        """Each piece's attribute values as integer codes `labels [N, A]` (A attribute keys,
        sorted; a missing value is a value of its own), for auxiliary targets of the
        scorer's audio trunk."""
        if self._attrs is None or len(self._attrs) != n:
            raise ValueError(
                "AudioDataModule: attribute_labels needs one attribute dict per piece "
                "(pass attrs, or leave tokens None to use the corpus)"
            )
        self.label_keys = sorted({k for a in self._attrs for k in a})
        self.labels, values = attribute_codes(self._attrs, self.label_keys)  # [N, A]
        self.label_sizes = [len(v) for v in values]

    # -------------------------------------------------------------- setup
    @property
    def render(self) -> Renderer:
        if self._render is None:
            from suite.music.render import render

            self._render = render
        return self._render

    def setup(self, stage: str | None = None) -> None:
        if self._tokens is None:
            self._tokens, self._captions, self._attrs = _load_default_corpus(
                self.n_pieces, self.corpus_seed, self.root, with_attrs=True
            )
        tokens = self._tokens
        if tokens.dim() != 2 or tokens.shape[1] != T.SEQ_LEN:
            raise ValueError(
                f"AudioDataModule: tokens must be [N, {T.SEQ_LEN}], got {tuple(tokens.shape)}"
            )
        pool = np.arange(len(tokens))
        if self.task == "preference":
            pool = np.flatnonzero(is_clean(tokens).numpy())  # flawed pieces have no clean twin
        if self.task == "scorer":
            if self._captions is None or len(self._captions) != len(tokens):
                raise ValueError("AudioDataModule: the scorer task needs one caption per piece")
            if self.cond is None:
                if self._tower is None:
                    from suite.models.text_tower import default_tower

                    self._tower = default_tower()
                self.cond = self._tower.encode(self._captions).cpu()  # [N, 384]
            if self.swap_draws and self.swaps is None:
                if self._attrs is None or len(self._attrs) != len(tokens):
                    raise ValueError(
                        "AudioDataModule: swap_draws needs one attribute dict per piece "
                        "(pass attrs, or leave tokens None to use the corpus)"
                    )
                self.swaps = SwapNegatives(
                    self._attrs, self.swap_draws, self._tower, self.seed,
                    self.attribute_positives, self.near_misses,
                )
        if self.attribute_labels and self.labels is None:
            self._code_labels(len(tokens))
        n_val = held_out_count(len(pool), self.val_pieces)
        if len(pool) - n_val < 2 or n_val < 2:
            raise ValueError(
                f"AudioDataModule: only {len(pool)} usable pieces for task {self.task!r}"
            )
        self.train_idx, self.val_idx = held_out_split(pool, self.val_pieces, self.seed)

    def _loader(self, idx: np.ndarray, shuffle: bool) -> DataLoader:
        if shuffle and self.hard_share > 0:  # a share of each batch from one genre-tempo cell
            cells = genre_tempo_cells(self._tokens[idx])
            sampler = CellBatchSampler(cells, self.batch_size, self.hard_share, self.seed)
            return DataLoader(_Indexed(self._tokens, idx), batch_sampler=sampler)
        return DataLoader(
            _Indexed(self._tokens, idx),
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,  # triplet / InfoNCE batches need several pieces
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_idx, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_idx, shuffle=False)

    # -------------------------------------------------------------- rendering
    def _augment_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        k = torch.randint(-self.max_transpose, self.max_transpose + 1, (b,), generator=self._gen)
        d = torch.randint(
            -self.max_tempo_shift, self.max_tempo_shift + 1, (b,), generator=self._gen
        )
        return shift_tempo(transpose_tokens(tokens, k), d)

    def _noise(self, audio: torch.Tensor) -> torch.Tensor:
        lo, hi = self.snr_db
        snr = lo + (hi - lo) * torch.rand(audio.shape[0], generator=self._gen)
        return add_noise(audio, snr, self._gen)

    def _recordings(self, tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`tokens` recorded in one quality drawn uniformly per piece (clean or a flaw) at
        every step, replacing whatever runs of bad recording the piece had."""
        draw = torch.randint(0, len(A.RECORDINGS), (tokens.shape[0],), generator=generator)
        return with_recording(tokens, draw)

    def _two_renders(self, tokens: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The pieces rendered twice, each time with its own random recording quality, so a
        positive pair differs in recording and E must tell pieces apart by their music
        (the world issue's fairness rule). Validation draws are fixed per batch."""
        gen = self._gen if training else torch.Generator().manual_seed(self.seed + 7)
        return self.render(self._recordings(tokens, gen)), self.render(self._recordings(tokens, gen))

    def _chunks(
        self, audio: torch.Tensor, training: bool, other: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two chunks per piece -> `[B, clip]` each (see the module docstring); with `other`
        (the same pieces rendered differently) the second chunk is cut from it."""
        b, s = audio.shape
        clip = round(self.clip_seconds * 16000)
        if clip > s:
            raise ValueError(f"AudioDataModule: clip of {clip} samples > rendered {s} samples")
        if 2 * clip <= s:
            if training:
                first = torch.randint(0, s - 2 * clip + 1, (b,), generator=self._gen)
                second = (
                    first
                    + clip
                    + (torch.rand(b, generator=self._gen) * (s - 2 * clip - first + 1)).long()
                )
            else:
                first, second = torch.zeros(b, dtype=torch.long), torch.full((b,), s - clip)
        else:
            first, second = torch.zeros(b, dtype=torch.long), torch.full((b,), s - clip)
        offs = torch.arange(clip)
        a = audio.gather(1, (first[:, None] + offs).to(audio.device))
        c = (audio if other is None else other).gather(1, (second[:, None] + offs).to(audio.device))
        return a, c

    def _embedder_batch(self, tokens, index, training: bool, aug: bool) -> dict:
        """Two chunks per piece (module docstring), with each chunk's key and mode
        (`datamodules.pitch_negatives`) and, in training, the transposed twins."""
        if aug and self.pair_augment == "independent" and not self.recording_augment:
            both = self._augment_tokens(torch.cat([tokens, tokens]))  # own pitch / tempo per chunk
            audio = self._noise(self.render(both))
            a, _ = self._chunks(audio[: len(tokens)], True)
            _, c = self._chunks(audio[len(tokens) :], True)
            pair = (both[: len(tokens)], both[len(tokens) :])
        else:  # one pitch / tempo shift per piece, noise per chunk
            shifted = self._augment_tokens(tokens) if aug else tokens
            if self.recording_augment:  # a recording quality per chunk (music, not recording)
                first, second = self._two_renders(shifted, training)
                a, c = self._chunks(first, training, other=second)
            else:
                a, c = self._chunks(self.render(shifted), training)
            if aug:
                a, c = self._noise(a), self._noise(c)
            pair = (shifted, shifted)
        (ka, ma), (kc, mc) = key_mode_labels(pair[0]), key_mode_labels(pair[1])
        if not training:
            return {"audio_a": a, "audio_b": c, "label": index, "key": ka, "mode": ma}
        audio, label = torch.cat([a, c]), torch.cat([index, index])
        key, mode = torch.cat([ka, kc]), torch.cat([ma, mc])
        if self.transposed_negatives > 0:
            chunks, twin_label, twins = transposed_twins(
                pair[0], index, self.transposed_negatives, self._gen, self._twin_chunks
            )
            kt, mt = key_mode_labels(twins)
            audio, label = torch.cat([audio, chunks]), torch.cat([label, twin_label])
            key, mode = torch.cat([key, kt]), torch.cat([mode, mt])
        return {"audio": audio, "label": label, "key": key, "mode": mode}

    def _twin_chunks(self, twins: torch.Tensor) -> torch.Tensor:
        """One chunk `[M, clip]` per twin, in its own recording when pairs have one."""
        if self.recording_augment:
            twins = self._recordings(twins, self._gen)
        chunk, _ = self._chunks(self.render(twins), True)
        return self._noise(chunk) if self.augment else chunk

    @torch.no_grad()
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        tokens, index = batch["tokens"], batch["index"]  # [B, L], [B]
        training = self.trainer is not None and self.trainer.training
        aug = self.augment and training
        if self.task == "embedder":
            return self._embedder_batch(tokens, index, training, aug)
        if self.task == "scorer":
            audio = self.render(tokens)
            audio = self._noise(audio) if aug else audio
            extra = {}
            if training and self.labels is not None:  # auxiliary targets of the audio trunk
                extra["labels"] = self.labels[index.cpu()].to(tokens.device)  # [B, A]
            if training and self.swaps is not None:
                out = self.swaps.batch(index, self._gen)
                return {**{k: v.to(tokens.device) if torch.is_tensor(v) else v
                           for k, v in out.items()}, "audio": audio, "index": index, **extra}
            cond = self.cond[index.cpu()].to(tokens.device)
            return {
                "audio": audio,
                "cond": cond,
                "caption": [self._captions[i] for i in index.tolist()],
                "index": index,
                **extra,
            }
        # Validation pairs are fixed: the same flaws for a batch in every epoch.
        gen = (
            self._gen if training else torch.Generator().manual_seed(self.seed + 1 + int(index[0]))
        )
        win, lose = self.render(tokens), self.render(make_flawed(tokens, gen))
        return {"win": win, "lose": lose, "index": index}
