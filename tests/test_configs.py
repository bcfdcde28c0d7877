"""Every experiment in conf/ and every sweep in sweeps/ composes, and its parts instantiate.

Constructing a job's DataModule and LightningModule must be cheap (artifacts are built in
`prepare_data`/`setup`), so this instantiates them for real, for every config.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import suite.run  # noqa: F401  (registers the ${cwd:} and ${pyattr:} resolvers)

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted(p for p in (REPO / "conf").glob("*.yaml") if not p.name.startswith("_"))
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def compose_file(path: Path, overrides: list[str] | None = None):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(path.parent), version_base="1.3"):
        # conf/ on the search path, as the CLI shim does with --config-dir
        cfg = compose(
            config_name=path.stem,
            overrides=[f"hydra.searchpath=[file://{REPO / 'conf'}]", *(overrides or [])],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_there_are_experiments():
    assert {p.stem for p in EXPERIMENTS} >= {"pretrain", "prepare"}


@pytest.mark.parametrize("path", EXPERIMENTS + SWEEPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_composes_and_instantiates(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# Run: python -m suite "), f"{path} must start with its command"
    cfg = compose_file(path)
    assert cfg.name and cfg.stage == "fit"
    for key, node in cfg.items():  # every interpolation outside Hydra's own section resolves
        if key != "hydra" and OmegaConf.is_config(node):
            OmegaConf.to_container(node, resolve=True)
    if cfg.get("data") is not None:
        hydra.utils.instantiate(cfg.data)
    hydra.utils.instantiate(cfg.model)
    hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    for group in ("logger", "callbacks"):
        for spec in (cfg.get(group) or {}).values():
            if group == "logger":
                continue  # creating an MLflow logger is lazy; its settings resolved above
            hydra.utils.instantiate(spec)


def test_the_n_study_exports_name_the_n_study_students():
    """sweeps/n_exports.yaml evaluates what sweeps/n_study.yaml exports (beta15-N<n>-seed0),
    and plain conf/eval_student.yaml still names the beta sweep's (beta<b>-seed<s>)."""
    trained = compose_file(REPO / "sweeps" / "n_study.yaml", ["+n_study=n4"])
    cfg = compose_file(REPO / "sweeps" / "n_exports.yaml", ["student_n=4"])
    assert cfg.sources == "beta15-N4-seed0" and cfg.student_n == 4
    assert cfg.model.sources[0].endswith("/beta15-N4-seed0.safetensors")
    assert Path(trained.model.export_path).name == Path(cfg.model.sources[0]).name
    plain = compose_file(REPO / "conf" / "eval_student.yaml", ["student_beta=5", "student_seed=2"])
    assert plain.sources == "beta5-seed2" and plain.student_n is None
