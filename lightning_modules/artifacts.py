"""Build-on-demand artifacts for the jobs: the base LM theta_init and the audio models.

The student (paper section 2) starts from a pretrained model theta_init and rewards
diversity with an embedder E (appendix D.1); quality is measured with a MuLan-style
scorer and a preference model (section 3.1). None of them can be downloaded, so each is
trained here on the embedded music world by its own LightningModule, and cached by
`suite.artifacts.ensure` under `artifacts/<kind>-<hash>/` with a `record.json` of the
spec and code version that made it.

Jobs name what they need with `resolve(kind, value)`:
- a `str` is a checkpoint path that must exist (a user's own model);
- a mapping is an artifact spec `{"seed", "data": {...}, "model": {...}, "train": {...}}`;
  the artifact is built if missing (one log line, a progress bar, an MLflow run in the
  store the run task configured, `lightning_modules.tracking`) and its `model.pt` path returned.

Call `resolve` from `prepare_data()` / `setup()` only, so that constructing a job stays
cheap and `python -m suite prepare` builds everything a job needs.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from suite import artifacts

log = logging.getLogger("suite.artifacts")

# kind -> (LightningModule, DataModule, fixed DataModule kwargs, version).
# Bump a version when the meaning of what its builder makes changes.
# Every kind went up by one with the music world's version 2 (the recording moved from a
# header token into the steps: other tokens, other audio).
JOBS: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "base_lm": ("lightning_modules.pretrain:PretrainLM", "datamodules.corpus:MusicCorpusDataModule", {}, 4),
    # every kind +1 per world version (3: flaws per segment; 4: recording sessions); embedder 2: the "tiny" preset's clip went from 4 s (3-s chunks zero-padded) to 3 s
    "embedder": ("lightning_modules.embedder:EmbedderJob", "datamodules.audio:AudioDataModule", {"task": "embedder"}, 5),
    "scorer": ("lightning_modules.scorer:ScorerJob", "datamodules.audio:AudioDataModule", {"task": "scorer"}, 4),
    "preference": ("lightning_modules.preference:PreferenceJob", "datamodules.audio:AudioDataModule", {"task": "preference"}, 4),
}  # fmt: skip
KINDS = tuple(JOBS)
# An embedder spec whose `data` names a `folder` trains on the user's audio files instead;
# a preference spec whose `data` names a `base_lm` trains on pairs of that model's
# generations judged by the oracle (the paper's preference model learned from raters'
# judgments of generated music).
FOLDER_DATA = "datamodules.audio_folder:AudioFolderDataModule"
GENERATION_DATA = "datamodules.generations:GenerationPairsDataModule"
# A scorer spec whose `data` names a `trunk` (a built scorer's model.pt) trains on that
# trunk's cached features: the frozen-trunk stage (`datamodules.trunk_features`).
TRUNK_DATA = "datamodules.trunk_features:TrunkFeatureDataModule"
# A scorer spec whose `data` names a `base_lm` trains on adherence pairs of that model's
# generations judged by the oracle: the generation stage (`datamodules.adherence_pairs`).
ADHERENCE_DATA = "datamodules.adherence_pairs:AdherencePairsDataModule"
# Spec fields that name another artifact: (section, key) -> its kind (None: the same kind).
# Each takes a checkpoint path or a nested spec; a nested spec is built first when missing,
# and it is what the folder hash sees, so a chain of stages (the scorer's: contrastive ->
# frozen trunk -> whole) hashes the same in every checkout, where an absolute path would not.
REFERENCES: dict[tuple[str, str], str | None] = {("model", "init_weights"): None, ("data", "trunk"): "scorer"}


def _data_target(kind: str, spec: Mapping | None) -> str:
    data = (spec or {}).get("data") or {}
    if kind == "embedder" and isinstance(data, Mapping) and "folder" in data:
        return FOLDER_DATA
    if kind == "preference" and isinstance(data, Mapping) and "base_lm" in data:
        return GENERATION_DATA
    if kind == "scorer" and isinstance(data, Mapping) and "trunk" in data:
        return TRUNK_DATA
    if kind == "scorer" and isinstance(data, Mapping) and "base_lm" in data:
        return ADHERENCE_DATA
    return JOBS[kind][1]


def _data_kwargs(kind: str, spec: Mapping | None) -> dict[str, Any]:
    """The DataModule's keyword arguments: the kind's fixed ones (unless the spec's data
    names another DataModule that takes none) and the spec's `data`."""
    fixed = {} if _data_target(kind, spec) in (GENERATION_DATA, TRUNK_DATA, ADHERENCE_DATA) else JOBS[kind][2]
    return {**fixed, **((spec or {}).get("data") or {})}
# Keys of a spec's `train` section that configure the Trainer rather than the job.
_TRAINER_KEYS = {"accelerator", "val_every", "log_every", "precision", "checkpoint_every"}
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"


def _load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _plain(value: Any) -> Any:
    """DictConfig / ListConfig / tuples to plain JSON-able containers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def _sources(kind: str, spec: Mapping | None = None) -> list[Path]:
    module_target, data_target = JOBS[kind][0], _data_target(kind, spec)
    files = []
    for target in (module_target, data_target):
        module = importlib.import_module(target.partition(":")[0])
        files.append(Path(module.__file__))
    return files


def resolve(kind: str, value: str | os.PathLike | Mapping, root: Path | None = None) -> Path:
    """The checkpoint file for `kind`: an existing path, or an artifact built from a spec."""
    if kind not in JOBS:
        raise ValueError(f"resolve: unknown artifact kind {kind!r}; expected one of {KINDS}")
    if isinstance(value, (str, os.PathLike)):
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{kind}: checkpoint file not found: {path}")
        return path
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{kind}: expected a checkpoint path or an artifact spec mapping, got {type(value).__name__}"
        )
    spec = _plain(value)
    unknown = set(spec) - {"seed", "data", "model", "train"}
    if unknown:
        raise ValueError(
            f"{kind}: unknown artifact spec keys {sorted(unknown)}; allowed: seed, data, model, train"
        )
    version = JOBS[kind][3]
    folder = artifacts.ensure(
        kind, version, spec, lambda tmp: train_artifact(kind, spec, tmp),
        sources=_sources(kind, spec), root=root,
    )  # fmt: skip
    return folder / MODEL_FILE


def artifact_metrics(path: Path) -> dict[str, float]:
    """The held-out figures recorded when the artifact at `path` (its model.pt) was built."""
    file = Path(path).parent / METRICS_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def _mlflow_logger(kind: str, folder: Path, spec: dict[str, Any], run_id: str | None, step: int):
    from lightning_modules import tracking

    name = folder.name.split(".tmp-")[0].lstrip(".")
    return tracking.artifact_logger(kind, name, spec, run_id=run_id, from_step=step)


def _resolve_references(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` with each artifact it names (REFERENCES) replaced by that artifact's file,
    built first when it is a spec not built yet."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in spec.items()}
    for (section, key), ref_kind in REFERENCES.items():
        value = (out.get(section) or {}).get(key)
        if isinstance(value, Mapping):
            out[section][key] = str(resolve(ref_kind or kind, value))
    return out


def train_artifact(kind: str, spec: dict[str, Any], folder: Path) -> None:
    """Train the job for `kind` from `spec` and write model.pt and metrics.json into folder;
    an interrupted build of the same spec resumes from its partial checkpoint
    (`lightning_modules.build_resume`)."""
    import lightning.pytorch as pl

    from lightning_modules import build_resume

    spec = _resolve_references(kind, spec)
    module_target = JOBS[kind][0]
    data_target = _data_target(kind, spec)
    pl.seed_everything(int(spec.get("seed", 0)), workers=True, verbose=False)
    train = dict(spec.get("train", {}))
    max_steps = int(train.get("max_steps", 1000))
    model_kwargs = dict(spec.get("model", {}))
    if kind == "base_lm":
        from suite.music import tokens

        model_kwargs.setdefault("vocab_size", tokens.VOCAB_SIZE)
        model_kwargs.setdefault("seq_len", tokens.SEQ_LEN)
    job = _load(module_target)(
        **model_kwargs, **{k: v for k, v in train.items() if k not in _TRAINER_KEYS}
    )
    datamodule = _load(data_target)(**_data_kwargs(kind, spec))
    partial = build_resume.partial_dir(folder)
    every = build_resume.checkpoint_every(train)
    ckpt, step = build_resume.resume_point(partial)
    if ckpt is not None:
        log.info("resuming %s from step %d of %d (%s)", kind, step, max_steps, ckpt)
        build_resume.note_resume(partial, step)
    logger = _mlflow_logger(
        kind, folder, spec, build_resume.run_id(partial) if ckpt else None, step
    )
    trainer = pl.Trainer(
        accelerator=train.get("accelerator", "auto"),
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        val_check_interval=train.get("val_every"),
        check_val_every_n_epoch=None if train.get("val_every") else 1,
        num_sanity_val_steps=0,
        logger=logger,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=int(train.get("log_every", 50)),
        default_root_dir=str(folder / "_trainer"),
        precision=train.get("precision", "32-true"),
        callbacks=[build_resume.PartialCheckpoint(partial, every, logger.run_id if logger else None)],
    )
    trainer.fit(job, datamodule=datamodule, ckpt_path=ckpt)
    results = trainer.validate(job, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    job.model.save(folder / MODEL_FILE)
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    log.info("%s held-out metrics: %s", kind, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    shutil.rmtree(folder / "_trainer", ignore_errors=True)
    build_resume.finish(partial, folder)


class ArtifactSet:
    """Every artifact of a set of specs; `prepare_data()` builds the missing ones.

    The model of `conf/prepare.yaml`, so that `python -m suite prepare --config
    conf/prepare.yaml` builds the base LM, the embedder and both scorers in one go.
    """

    def __init__(self, **specs: str | Mapping) -> None:
        unknown = set(specs) - set(JOBS)
        if unknown:
            raise ValueError(f"ArtifactSet: unknown kinds {sorted(unknown)}; expected {KINDS}")
        self.specs = specs
        self.paths: dict[str, Path] = {}

    def prepare_data(self) -> None:
        for kind, spec in self.specs.items():
            self.paths[kind] = resolve(kind, spec)
            log.info("%s ready: %s %s", kind, self.paths[kind], artifact_metrics(self.paths[kind]))
