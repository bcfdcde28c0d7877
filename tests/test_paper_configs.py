"""conf/paper/*.yaml, sweeps/paper/beta.yaml and conf/artifacts/paper.yaml: the paper's
hyper-parameters for a GPU (sections 3.1-3.3, appendices D.1 and D.3).

Everything here composes configs and constructs configs or jobs; nothing is trained and no
artifact is built (the paper-sized specs are never resolved). conf/paper/ and sweeps/paper/
are not in tests/test_configs.py's globs (it instantiates trainers, and these ask for a GPU),
so this file checks them the same way short of building the Trainer.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import sys
from pathlib import Path

import hydra
import lightning.pytorch as pl
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import suite.run  # noqa: F401  (registers the ${cwd:} and ${pyattr:} resolvers)
from lightning_modules.artifacts import (
    _TRAINER_KEYS,
    JOBS,
    KINDS,
    TRUNK_DATA,
    _data_kwargs,
    _data_target,
    _load,
    _plain,
)
from suite.__main__ import to_hydra_argv
from suite.models.vit import count_parameters, embedder_config
from suite.music import tokens

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
PAPER = sorted((CONF / "paper").glob("*.yaml"))
SWEEP = REPO / "sweeps" / "paper" / "beta.yaml"
BETAS = {"beta0": 0, "beta5": 5, "beta10": 10, "beta15": 15}

# What conf/paper/beta15.yaml changes in conf/beta15.yaml (everything else is the same:
# both compose conf/_student_.yaml, so `sources: ${name}-seed${seed}` is inherited).
PAPER_GROUPS = ["artifacts=paper", "trainer=gpu"]
PAPER_VALUES = {
    "name": "paper-beta${diversity.beta}",
    "experiment": "cfg-distill-paper",
    "eval_every": 500,
    "diversity.warmup_steps": 1000,
    "diversity.scale": 1.0,
    "data.batch_size": 128,
    "trainer.max_steps": 5000,
    "trainer.log_every_n_steps": 25,
}


def cli_flags(path: Path, extra: list[str] | None = None) -> list[str]:
    return to_hydra_argv(["fit", "--config", str(path), *(extra or [])])


def compose_cli(path: Path, overrides: list[str] | None = None):
    """Compose `path` as `python -m suite fit --config path overrides` does: the config path,
    name and extra search dir come from the CLI shim's own argv translation."""
    argv = cli_flags(path, overrides)
    flags = dict(zip(argv[0:6:2], argv[1:6:2]))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=flags["--config-path"], version_base="1.3"):
        cfg = compose(
            config_name=flags["--config-name"],
            overrides=[f"hydra.searchpath=[file://{flags['--config-dir']}]", *argv[6:]],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


def compose_in_conf(name: str):
    """Compose `name` (e.g. "paper/beta15") with conf/ as the config dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name)


def resolved(cfg) -> dict:
    return {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in cfg.items()
        if k != "hydra"
    }


def unresolved(cfg) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}


def test_the_paper_files():
    assert {p.stem for p in PAPER} == set(BETAS)
    for path in [*PAPER, SWEEP]:
        lines = path.read_text().splitlines()
        run = f"# Run: python -m suite fit --config {path.relative_to(REPO)}"
        assert run in lines[:2], f"{path} must give its run command first"


@pytest.mark.parametrize("path", [*PAPER, SWEEP], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_composes_with_the_papers_hyper_parameters(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_cli(path)
    beta = BETAS.get(path.stem, 15)  # the sweep's own config is paper/beta15's
    c = resolved(cfg)
    assert c["diversity"] == {"beta": beta, "warmup_steps": 1000, "scale": 1.0}
    assert c["name"] == f"paper-beta{beta}" and c["sources"] == f"paper-beta{beta}-seed0"
    assert c["experiment"] == "cfg-distill-paper" and c["stage"] == "fit"
    assert c["gamma"] == 3.0 and c["temperature"] == 0.99 and c["eval_every"] == 500
    assert c["negative_prompt"] == "Bad audio quality."
    assert c["data"]["batch_size"] == 128
    model = c["model"]
    assert model["lr"] == 1.5e-4 and model["n_generations"] == 2 and model["gamma"] == 3.0
    assert (model["beta"], model["beta_warmup_steps"], model["beta_scale"]) == (beta, 1000, 1.0)
    assert model["temperature"] == 0.99 and model["eval_every"] == 500
    assert model["negative_prompt"] == "Bad audio quality."
    export = tmp_path / "models" / f"paper-beta{beta}-seed0.safetensors"
    assert model["export_path"] == str(export)
    trainer = c["trainer"]
    assert (trainer["accelerator"], trainer["devices"], trainer["precision"]) == (
        "gpu", 1, "bf16-mixed",
    )  # fmt: skip
    assert trainer["val_check_interval"] == 500 and trainer["max_steps"] == 5000
    assert c["callbacks"]["checkpoint"]["every_n_train_steps"] == 500
    assert cfg.hydra.runtime.choices["artifacts"] == "paper"
    assert cfg.hydra.runtime.choices["trainer"] == "gpu"
    emb = c["artifacts"]["embedder"]
    assert emb["model"]["preset"] == "paper" and emb["data"]["clip_seconds"] == 4.0
    assert model["embedder"] == emb
    assert model["policy"] == {"name": "music", "checkpoint": c["artifacts"]["base_lm"],
                               "use_grammar_mask": True}  # fmt: skip
    if path == SWEEP:
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
        assert cfg.hydra.sweeper.params == {"diversity.beta": "0,5,10,15"}

    # The job's parts construct (artifacts are resolved in setup, never here); the Trainer
    # wants a GPU, so only its arguments are checked.
    hydra.utils.instantiate(cfg.data)
    hydra.utils.instantiate(cfg.model)
    kwargs = {k: v for k, v in trainer.items() if k != "_target_"}
    inspect.signature(pl.Trainer).bind(**kwargs)


@pytest.mark.parametrize("path", [*PAPER, SWEEP], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_hydras_own_command_line_route(path, tmp_path, monkeypatch):
    """Hydra's argument parser on the shim's argv (`--cfg job`: print, run nothing): the
    folder of the file first on the search path, conf/ added by --config-dir."""
    monkeypatch.chdir(tmp_path)
    ran = []

    @hydra.main(version_base="1.3", config_path=None, config_name=None)
    def task(cfg):
        ran.append(cfg)

    monkeypatch.setattr(sys, "argv", ["suite", *cli_flags(path, ["--cfg", "job"])])
    GlobalHydra.instance().clear()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        task()
    GlobalHydra.instance().clear()
    cfg = OmegaConf.create(out.getvalue())
    assert not ran
    beta = BETAS.get(path.stem, 15)
    assert cfg.diversity.beta == beta and cfg.name == f"paper-beta{beta}"
    assert cfg.trainer.accelerator == "gpu" and cfg.artifacts.embedder.model.preset == "paper"


@pytest.mark.parametrize("stem", sorted(BETAS))
def test_same_config_from_conf_as_config_dir(stem, tmp_path, monkeypatch):
    """`paper/beta15` named from conf/ (as a sweep's defaults do) is the same config:
    the `@package _global_` header keeps it at the root, not under `paper`."""
    monkeypatch.chdir(tmp_path)
    a = compose_in_conf(f"paper/{stem}")
    b = compose_cli(CONF / "paper" / f"{stem}.yaml")
    assert "paper" not in a
    assert unresolved(a) == unresolved(b)


def test_paper_beta15_is_beta15_plus_the_paper_overrides(tmp_path, monkeypatch):
    """conf/paper/beta15.yaml and conf/beta15.yaml share conf/_student_.yaml: they differ
    only by the paper's overrides (an edit of one not meant for the other fails here)."""
    monkeypatch.chdir(tmp_path)
    tiny = compose_cli(CONF / "beta15.yaml", PAPER_GROUPS)
    for key, value in PAPER_VALUES.items():
        OmegaConf.update(tiny, key, value, merge=False)
    paper = compose_cli(CONF / "paper" / "beta15.yaml")
    assert unresolved(paper) == unresolved(tiny)
    base = unresolved(compose_cli(CONF / "beta15.yaml"))
    for key, value in PAPER_VALUES.items():  # and each is really a change
        node = base
        for part in key.split("."):
            node = node[part]
        assert node != value, key


# ----------------------------------------------------------------------------------------
# conf/artifacts/paper.yaml: specs valid for their jobs' constructors (never built here)
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def specs() -> dict:
    cfg = compose_in_conf("paper/beta15")
    return _plain(OmegaConf.to_container(cfg.artifacts, resolve=True))


def tiny_specs() -> dict:
    cfg = compose_in_conf("beta15")  # conf/artifacts/tiny.yaml composes conf/lm/tiny.yaml
    return _plain(OmegaConf.to_container(cfg.artifacts, resolve=True))


def job_and_data(kind: str, spec: dict):
    """Construct the job as `lightning_modules.artifacts.train_artifact` does; check the
    data module's and Trainer's arguments without building any data."""
    assert set(spec) <= {"seed", "data", "model", "train"}
    module_target, data_target = JOBS[kind][0], _data_target(kind, spec)
    train = dict(spec.get("train", {}))
    # a stage's init_weights names an earlier stage by spec (REFERENCES), resolved to a file
    # only when it is built: the weights are not needed to check the constructor
    model_kwargs = {k: v for k, v in spec.get("model", {}).items() if k != "init_weights"}
    if kind == "base_lm":
        model_kwargs |= {"vocab_size": tokens.VOCAB_SIZE, "seq_len": tokens.SEQ_LEN}
    job = _load(module_target)(
        **model_kwargs, **{k: v for k, v in train.items() if k not in _TRAINER_KEYS}
    )
    inspect.signature(_load(data_target)).bind(**_data_kwargs(kind, spec))
    return job


def test_same_kinds_as_the_tiny_specs(specs):
    assert set(specs) == set(tiny_specs()) and set(KINDS) <= set(specs)
    for kind in KINDS:
        assert specs[kind] != tiny_specs()[kind]  # another spec: another artifact folder


def test_base_lm_is_lm_base(specs):
    spec = specs["base_lm"]
    lm_base = OmegaConf.to_container(OmegaConf.load(CONF / "lm" / "base.yaml"))
    assert spec["model"] == {**lm_base, "cond_dropout": 0.2}
    assert spec["data"]["n_pieces"] == specs["corpus"]["n_pieces"]
    job = job_and_data("base_lm", spec)
    n = job.model.num_parameters()
    assert 0.9 * 27e6 <= n <= 1.1 * 27e6, n  # conf/lm/base.yaml: ~27 M


def test_embedder_is_appendix_d1(specs):
    spec = specs["embedder"]
    assert spec["model"]["preset"] == "paper" and spec["data"]["clip_seconds"] == 4.0
    job = job_and_data("embedder", spec)
    assert job.model.config == embedder_config("paper")
    mirrored = OmegaConf.to_container(OmegaConf.load(CONF / "embedder" / "paper.yaml"))
    assert job.hparams["model_config"] == mirrored  # conf/embedder/paper.yaml
    assert 0.9 * 25e6 <= count_parameters(job.model) <= 1.1 * 25e6


def test_scorer_stages_mirror_the_tiny_chain(specs):
    # the three stages name each other by spec as in conf/artifacts/tiny.yaml, on one architecture
    assert specs["scorer"]["model"]["init_weights"] == specs["scorer_frozen_trunk"]
    frozen = specs["scorer_frozen_trunk"]
    assert frozen["data"]["trunk"] == frozen["model"]["init_weights"] == specs["scorer_contrastive"]
    for key in ("scorer_frozen_trunk", "scorer"):
        assert specs[key]["model"]["model_config"] == specs["scorer_contrastive"]["model"]["model_config"]
        job_and_data("scorer", specs[key])
    assert _data_target("scorer", frozen) == TRUNK_DATA


@pytest.mark.parametrize("kind", ["scorer", "preference"])
def test_scorers_are_bigger_than_tiny(specs, kind):
    job = job_and_data(kind, specs[kind])
    tiny = job_and_data(kind, tiny_specs()[kind])
    assert count_parameters(job.model) > 4 * count_parameters(tiny.model)
    # the same front-end and clip as the embedder E: they judge the same audio
    assert job.model.config.encoder.mel == embedder_config("paper").encoder.mel
    assert job.model.config.encoder.clip_seconds == 4.0


@pytest.mark.parametrize("n", [2, 4, 8])
def test_n_study_keeps_64_generations_per_step_and_its_own_export(n):
    """Figure 10 (sweeps/n_study.yaml): N generations per prompt x prompts per step = 64."""
    cfg = compose_cli(REPO / "sweeps" / "n_study.yaml", [f"+n_study=n{n}"])
    assert cfg.model.n_generations == n and cfg.data.batch_size * n == 64
    assert cfg.name == f"beta15-N{n}" and cfg.model.export_path.endswith(f"beta15-N{n}-seed0.safetensors")
    assert OmegaConf.to_container(cfg.hydra.sweeper.params) == {"+n_study": "n2,n4,n8"}
