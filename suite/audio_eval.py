"""Do the learned audio models mean something? Check them against the oracle judge.

The paper measures quality with a MuLan text-adherence score and a user-preference reward
model (section 3.1) and diversity with an embedder E (appendix D.1). Ours are trained on
the embedded music world; this script checks them on corpus pieces that none of them saw
(corpus seed 0, the `--n` pieces after the first `--skip`; the default skip is the tiny
corpus, 20000 pieces, which holds every piece the artifacts and the students train on):

- E: same-piece retrieval recall@1 (first vs second half of each piece) and the ROC AUC of
  cosine for same versus different pieces; for its misses, how often the piece it retrieved
  instead shares each attribute with the query (`embedder_miss_same_<attr>`), next to the
  share among all pairs of distinct pieces (`pairs_same_<attr>`): what E confuses;
- MuLan-style scorer: text-to-audio recall@1 / @5 with the pieces' own captions, and the
  Spearman correlation of its score with the oracle's adherence on (piece, caption) pairs
  where half the captions belong to another piece;
- preference model: pairwise accuracy of clean over flawed pieces, and the Spearman
  correlation of its score with the oracle's quality.

Run: `python -m suite.audio_eval --embedder PATH --scorer PATH --preference PATH`
(paths default to the tiny artifacts, which must be built already: `python -m suite prepare
--config conf/prepare.yaml`; they are looked up in `artifacts/` by their spec, never built
here); it prints a Markdown table and writes `docs/audio_models.csv` when `--out` is given.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from suite import artifacts
from suite.models.preference import PreferenceModel
from suite.models.retrieval import recall_at_k, roc_auc
from suite.models.scorer import MuLanScorer
from suite.models.text_tower import default_tower
from suite.models.vit import AudioEmbedder
from suite.music import oracle
from suite.music.corpus import build_corpus
from suite.music.render import AUDIO_SAMPLES, render

TINY_SPECS = "conf/artifacts/tiny.yaml"  # the default artifacts' build specs
MODEL_FILE = "model.pt"  # the model file the artifact builders write into each folder


@torch.no_grad()
def _batched(fn, x: torch.Tensor, *extra, batch: int = 64) -> torch.Tensor:
    parts = []
    for i in range(0, len(x), batch):
        parts.append(fn(x[i : i + batch], *(e[i : i + batch] for e in extra)).float())
    return torch.cat(parts)


def evaluate(embedder_path, scorer_path, preference_path, n: int = 500, skip: int = 20000,
             seed: int = 0) -> dict[str, float]:  # fmt: skip
    corpus = build_corpus(seed=seed, n=skip + n)
    tokens = torch.as_tensor(corpus.tokens[skip : skip + n].astype(np.int64))  # [n, L]
    captions = corpus.captions[skip : skip + n]
    attrs = corpus.attrs[skip : skip + n]
    flawed = corpus.flawed[skip : skip + n]
    audio = torch.cat([render(tokens[i : i + 64]) for i in range(0, n, 64)])  # [n, S]
    out: dict[str, float] = {"n_pieces": float(n)}

    embedder = AudioEmbedder.from_checkpoint(embedder_path).eval()
    half = AUDIO_SAMPLES // 2
    a = _batched(embedder, audio[:, :half])  # [n, D] first half of each piece
    b = _batched(embedder, audio[:, half:])  # [n, D] second half
    same = torch.eye(n, dtype=torch.bool)
    out["embedder_recall@1"] = recall_at_k(a, b, same, 1)
    sim = a @ b.T  # [n, n]
    out["embedder_auc"] = roc_auc(sim[same], sim[~same])
    out.update(miss_attribute_shares(sim, attrs))

    scorer = MuLanScorer.from_checkpoint(scorer_path).eval()
    text = default_tower().encode(list(captions))  # [n, 384]
    audio_emb = _batched(scorer.embed_audio, audio)  # [n, J]
    text_emb = _batched(scorer.embed_text, text)  # [n, J]
    # A caption shared by several pieces is a correct match for each of them.
    correct = torch.tensor([[ci == cj for cj in captions] for ci in captions])  # [n, n]
    out["scorer_recall@1"] = recall_at_k(text_emb, audio_emb, correct, 1)
    out["scorer_recall@5"] = recall_at_k(text_emb, audio_emb, correct, 5)
    rng = np.random.default_rng(seed)
    other = rng.permutation(n)
    use_other = rng.random(n) < 0.5
    pair = np.where(use_other, other, np.arange(n))  # caption index for each piece
    mulan = (audio_emb * text_emb[torch.as_tensor(pair)]).sum(-1).numpy()
    adherence = np.array(
        [oracle.judge(tokens[i].numpy(), attrs[pair[i]]).adherence_mean for i in range(n)]
    )
    out["mulan_vs_oracle_adherence_spearman"] = float(stats.spearmanr(mulan, adherence).statistic)

    preference = PreferenceModel.from_checkpoint(preference_path).eval()
    pref = _batched(preference.score, audio).numpy()
    quality = np.array([oracle.judge(tokens[i].numpy(), attrs[i]).quality for i in range(n)])
    out["preference_vs_oracle_quality_spearman"] = float(stats.spearmanr(pref, quality).statistic)
    clean, bad = pref[~flawed], pref[flawed]
    out["preference_clean_over_flawed_accuracy"] = float((clean[:, None] > bad[None, :]).mean())
    return out


MISS_ATTRIBUTES = ("genre", "tempo", "drums", "lead", "bass", "chords", "key", "mode", "mood")


def miss_attribute_shares(sim: torch.Tensor, attrs: list[dict]) -> dict[str, float]:
    """For the retrieval misses of `sim` `[n, n]` (query i's top-1 is not piece i): the share
    whose retrieved piece has the query's value of each attribute; and the same share over
    every ordered pair of distinct pieces (what chance would give)."""
    n = len(attrs)
    top = sim.argmax(dim=1).tolist()
    misses = [(i, j) for i, j in enumerate(top) if j != i]
    out: dict[str, float] = {"embedder_misses": float(len(misses))}
    for key in MISS_ATTRIBUTES:
        values = np.array([a.get(key) for a in attrs], dtype=object)
        if all(v is None for v in values):  # an attribute these pieces do not have
            continue
        equal = values[:, None] == values[None, :]  # [n, n]
        hits = [bool(equal[i, j]) for i, j in misses]
        out[f"embedder_miss_same_{key}"] = float(np.mean(hits)) if hits else float("nan")
        out[f"pairs_same_{key}"] = float((equal.sum() - n) / (n * (n - 1)))
    return out


def default_specs() -> dict:
    """The tiny default's artifact specs, composed as `python -m suite prepare` composes
    them: not read from the file, since they include other config groups (the preference
    spec names the base LM whose generations it learns from, conf/lm/tiny.yaml inside it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    import suite.run  # noqa: F401  (the config's resolvers)

    GlobalHydra.instance().clear()
    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="prepare").artifacts, resolve=True)


def _checkpoint(kind: str, value: str | dict) -> Path:
    """A checkpoint path given by the user (must exist), or the model file of the
    already-built artifact of a spec; a missing artifact is a one-line error (exit 2)."""
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{kind}: checkpoint file not found: {path}")
        return path
    folder = artifacts.find_built(kind, value)
    if folder is None or not (folder / MODEL_FILE).is_file():
        print(
            f"error: no built {kind} artifact of {TINY_SPECS} under {artifacts.default_root()}; "
            "build it with `python -m suite prepare --config conf/prepare.yaml`",
            file=sys.stderr,
        )
        sys.exit(2)
    return folder / MODEL_FILE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder")
    parser.add_argument("--scorer")
    parser.add_argument("--preference")
    parser.add_argument("--n", type=int, default=500, help="held-out pieces (default 500)")
    parser.add_argument("--skip", type=int, default=20000, help="training pieces to skip")
    parser.add_argument("--out", help="CSV file to write")
    args = parser.parse_args(argv)
    if args.n < 2 or args.skip < 0:
        parser.error(f"need --n >= 2 and --skip >= 0, got --n {args.n} --skip {args.skip}")
    paths = {}
    if not (args.embedder and args.scorer and args.preference):
        specs = default_specs()
        for kind in ("embedder", "scorer", "preference"):
            paths[kind] = _checkpoint(kind, getattr(args, kind) or specs[kind])
    else:
        paths = {k: getattr(args, k) for k in ("embedder", "scorer", "preference")}
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = evaluate(
        paths["embedder"], paths["scorer"], paths["preference"], n=args.n, skip=args.skip
    )
    print("| measure | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value:.4f} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["measure", "value"])
            writer.writerows(result.items())


if __name__ == "__main__":
    main()
