"""EmbedderJob(init_weights=...): a second schedule starts from a built E's weights."""

import pytest
import torch

from lightning_modules.embedder import EmbedderJob


def test_init_weights_loads_the_file_and_refuses_other_architectures(tmp_path):
    torch.manual_seed(0)
    first = EmbedderJob(preset="tiny")
    path = tmp_path / "model.pt"
    first.export(path)
    torch.manual_seed(1)  # another random init, which init_weights must replace
    second = EmbedderJob(preset="tiny", init_weights=str(path))
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert second.hparams.init_weights == str(path)  # part of the artifact spec and its hash

    config = first.model.config.to_dict()
    config["out_dim"] = 64
    with pytest.raises(ValueError, match="another architecture"):
        EmbedderJob(model_config=config, init_weights=str(path))
    with pytest.raises(FileNotFoundError, match="init_weights file not found"):
        EmbedderJob(preset="tiny", init_weights=str(tmp_path / "missing.pt"))
