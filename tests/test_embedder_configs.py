"""conf/embedder/{paper,tiny}.yaml mirror `suite.models.vit.EMBEDDER_PRESETS` (appendix D.1).

The paper's embedder E: 12 layers, 6 heads, width 512, feed-forward 1024, about 25 M
parameters, 192-d output; 512 is not divisible by 6, so the head width is its own parameter.
The yaml files are plain EmbedderConfig dicts in a Hydra config group, placeable wherever
an explicit `model_config` is wanted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import suite.run  # noqa: F401  (registers the ${cwd:} and ${pyattr:} resolvers)
from lightning_modules.embedder import EmbedderJob
from suite.__main__ import to_hydra_argv
from suite.models.vit import EMBEDDER_PRESETS, AudioEmbedder, EmbedderConfig, count_parameters

REPO = Path(__file__).resolve().parent.parent
GROUP = REPO / "conf" / "embedder"


def load(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(GROUP / f"{name}.yaml"), resolve=True)


def compose_cli(path: Path, overrides: list[str]):
    """Compose `path` as `python -m suite fit --config path overrides` would (search path
    and config name from the CLI shim's own argv translation)."""
    argv = to_hydra_argv(["fit", "--config", str(path), *overrides])
    flags = dict(zip(argv[0:6:2], argv[1:6:2]))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=flags["--config-path"], version_base="1.3"):
        return compose(
            config_name=flags["--config-name"],
            overrides=[f"hydra.searchpath=[file://{flags['--config-dir']}]", *argv[6:]],
        )


def test_the_group_mirrors_the_presets():
    assert {p.stem for p in GROUP.glob("*.yaml")} == set(EMBEDDER_PRESETS)


@pytest.mark.parametrize("name", sorted(EMBEDDER_PRESETS))
def test_yaml_is_the_preset_with_every_field_written_out(name):
    data = load(name)
    preset = EMBEDDER_PRESETS[name]
    assert data == preset.to_dict()  # every field present, none extra, same values
    assert EmbedderConfig.from_dict(data) == preset


@pytest.mark.parametrize("name", sorted(EMBEDDER_PRESETS))
def test_front_end_and_clip_are_appendix_d1(name):
    enc = EmbedderConfig.from_dict(load(name)).encoder
    mel = enc.mel
    assert (mel.sample_rate, mel.n_fft, mel.win_length, mel.hop_length, mel.n_mels) == (
        16000, 512, 512, 256, 156,
    )  # fmt: skip
    assert mel.trainable is False and mel.eps > 0  # log(mel + eps), fixed filters
    # D.1's 4-s clip; the tiny E uses 3 s, the two non-overlapping chunks of a 6-s piece
    want = {"paper": 4.0, "tiny": 3.0}[name]
    assert enc.clip_seconds == want and enc.clip_samples == round(want * 16000)


def test_paper_embedder_is_the_papers_25m_vit():
    config = EmbedderConfig.from_dict(load("paper"))
    vit = config.encoder.vit
    assert (vit.depth, vit.heads, vit.width, vit.ff_dim, config.out_dim) == (12, 6, 512, 1024, 192)
    assert 512 % 6 != 0 and vit.heads * vit.head_dim != vit.width  # its own parameter
    model = AudioEmbedder(config)
    n = count_parameters(model)
    assert 0.9 * 25e6 <= n <= 1.1 * 25e6, n
    blocks = model.encoder.vit.blocks
    assert len(blocks) == 12
    attn = blocks[0].attn
    assert (attn.heads, attn.head_dim) == (6, vit.head_dim)
    assert attn.qkv.out_features == 3 * 6 * vit.head_dim and attn.out.out_features == 512
    assert blocks[0].ff[0].out_features == 1024 and model.proj.out_features == 192


def test_tiny_embedder_forward_gives_unit_192d_embeddings():
    model = AudioEmbedder(EmbedderConfig.from_dict(load("tiny"))).eval()
    audio = 0.1 * torch.randn(2, model.clip_samples)  # two random clips at 16 kHz
    with torch.no_grad():
        emb = model(audio)
    assert emb.shape == (2, 192) and torch.isfinite(emb).all()
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_group_composes_into_a_jobs_model_config(tmp_path, monkeypatch):
    """The group is placeable: here as the embedder job's explicit `model_config`."""
    monkeypatch.chdir(tmp_path)
    key = "artifacts.embedder.model.model_config"
    cfg = compose_cli(REPO / "conf" / "beta15.yaml", [f"+embedder@{key}=tiny"])
    model = OmegaConf.to_container(cfg.artifacts.embedder.model, resolve=True)
    assert EmbedderConfig.from_dict(model["model_config"]) == EMBEDDER_PRESETS["tiny"]
    job = EmbedderJob(**model)  # the explicit config wins over the preset name
    assert job.model.config == EMBEDDER_PRESETS["tiny"]
    assert job.hparams["model_config"] == EMBEDDER_PRESETS["tiny"].to_dict()

    cfg = compose_cli(REPO / "conf" / "beta15.yaml", ["+embedder=paper"])
    embedder = OmegaConf.to_container(cfg.embedder, resolve=True)  # package `embedder`
    assert EmbedderConfig.from_dict(embedder) == EMBEDDER_PRESETS["paper"]


@pytest.mark.parametrize("spec_file", ["tiny", "paper"])
def test_artifact_spec_trains_on_the_clip_length_it_embeds(spec_file):
    """conf/artifacts/*.yaml: the DataModule's chunks are exactly the model's clip, so E never
    learns on zero padding it will not see in use (the session-3 fix of issue 6)."""
    spec = OmegaConf.load(REPO / "conf" / "artifacts" / f"{spec_file}.yaml").embedder
    model = OmegaConf.to_container(spec.model, resolve=False)
    if "model_config" in model:
        config = EmbedderConfig.from_dict(OmegaConf.to_container(spec.model.model_config))
    else:
        config = EMBEDDER_PRESETS[model.get("preset", "tiny")]
    assert spec.data.clip_seconds == config.encoder.clip_seconds
