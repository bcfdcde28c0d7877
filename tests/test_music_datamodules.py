"""Corpus and prompt DataModules: batch contract, caching, condition dropout."""

import pytest
import torch

from datamodules.corpus import MusicCorpusDataModule, caption_embeddings
from datamodules.prompts import PromptDataModule
from suite.music import tokens as T


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    from suite.models.text_tower import TextTower

    return TextTower(cache_dir=tmp_path_factory.mktemp("text_cache"), progress=False)


def test_corpus_batches(tmp_path, tower):
    dm = MusicCorpusDataModule(
        seed=0,
        n_pieces=48,
        val_fraction=0.25,
        batch_size=8,
        root=str(tmp_path),
        tower=tower,
        progress=False,
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"tokens", "cond", "flawed", "index"}
    assert batch["tokens"].shape == (8, T.SEQ_LEN) and batch["tokens"].dtype == torch.long
    assert batch["cond"].shape == (8, 384) and batch["cond"].dtype == torch.float32
    assert torch.allclose(batch["cond"].norm(dim=1), torch.ones(8), atol=1e-4)
    # the cond rows are the embeddings of the pieces' captions
    caps = [dm.corpus.captions[i] for i in batch["index"].tolist()]
    assert torch.allclose(batch["cond"], tower.encode(caps), atol=1e-5)
    assert torch.equal(batch["tokens"], torch.from_numpy(dm.corpus.tokens[batch["index"]]))
    n_train, n_val = len(dm.train_set), len(dm.val_set)
    assert (n_train, n_val) == (36, 12)
    assert not set(dm.train_set.index.tolist()) & set(dm.val_set.index.tolist())


def test_caption_embeddings_are_cached(tmp_path, tower):
    dm = MusicCorpusDataModule(seed=1, n_pieces=16, root=str(tmp_path), tower=tower, progress=False)
    dm.prepare_data()
    corpus = dm._load_corpus()
    cached = list(corpus.path.glob("cond-*.npy"))
    assert len(cached) == 1

    class NoEncode:
        fingerprint = tower.fingerprint

        def encode(self, prompts):
            raise AssertionError("embeddings should come from the cache")

    again = caption_embeddings(corpus, NoEncode())
    assert again.shape == (16, 384)


def test_condition_dropout(tmp_path, tower):
    dm = MusicCorpusDataModule(
        seed=2,
        n_pieces=200,
        val_fraction=0.1,
        batch_size=180,
        cond_dropout=0.3,
        root=str(tmp_path),
        tower=tower,
        progress=False,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    zero = (batch["cond"].abs().sum(1) == 0).float().mean().item()
    assert 0.15 < zero < 0.45
    val = next(iter(dm.val_dataloader()))
    assert (val["cond"].abs().sum(1) > 0).all()  # no dropout outside training
    with pytest.raises(ValueError, match="cond_dropout"):
        MusicCorpusDataModule(cond_dropout=1.5)


def test_prompt_batches(tmp_path, tower):
    path = tmp_path / "mine.txt"
    path.write_text("Rock song.\nA peaceful sunset on a beach\nOpera singer\n")
    dm = PromptDataModule(train_prompts=str(path), eval_prompts="eval", batch_size=2, tower=tower)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"prompt", "cond", "index"}
    assert isinstance(batch["prompt"], list) and len(batch["prompt"]) == 2
    assert batch["cond"].shape == (2, 384) and batch["index"].tolist() == [0, 1]
    assert torch.allclose(batch["cond"], tower.encode(batch["prompt"]), atol=1e-5)
    train = [b for b in dm.train_dataloader()]
    assert sorted(i for b in train for i in b["index"].tolist()) == [0, 1, 2]
    assert dm.negative_cond.shape == (384,) and dm.negative_cond.norm() > 0.99
    recs = dm.records("eval")
    assert recs[batch["index"][0]]["prompt"] == batch["prompt"][0]
    uncond = PromptDataModule(train_prompts=str(path), negative_prompt="", tower=tower)
    uncond.setup("test")
    assert torch.count_nonzero(uncond.negative_cond) == 0


def test_prompt_datamodule_bad_file(tmp_path, tower):
    (tmp_path / "empty.txt").write_text("\n")
    dm = PromptDataModule(train_prompts=str(tmp_path / "empty.txt"), tower=tower)
    with pytest.raises(ValueError, match="empty.txt"):
        dm.setup("fit")
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        PromptDataModule(train_prompts=str(tmp_path / "absent.csv"), tower=tower).setup("fit")


def test_the_resumable_prompt_order_is_the_plain_shuffled_loaders_under_lightning():
    """Runs made before the resumable sampler drew prompts from DataLoader(shuffle=True,
    generator=Generator().manual_seed(seed)); under a Lightning fit the new sampler must give
    the very same order in every epoch, or every result after epoch 1 would change."""
    import lightning as L
    from torch.utils.data import DataLoader

    from datamodules.prompts import PromptDataModule

    class Tower:
        def encode(self, prompts):
            return torch.zeros(len(prompts), 384)

    class Seen(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w, self.seen = torch.nn.Parameter(torch.zeros(1)), []

        def training_step(self, batch, i):
            self.seen += batch["index"].tolist()
            return (self.w**2).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(loader_or_dm):
        m = Seen()
        t = L.Trainer(max_steps=24, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)  # fmt: skip
        if isinstance(loader_or_dm, DataLoader):
            t.fit(m, train_dataloaders=loader_or_dm)
        else:
            t.fit(m, datamodule=loader_or_dm)
        return m.seen

    dm = PromptDataModule(batch_size=32, seed=0, tower=Tower())
    dm.setup("fit")
    n = len(dm._sets["train"])
    plain = DataLoader([{"index": i} for i in range(n)], batch_size=32, shuffle=True,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert fit(dm) == fit(plain)


def test_an_uneven_evaluation_split_over_processes_is_refused(tmp_path, tower):
    from types import SimpleNamespace

    path = tmp_path / "three.txt"
    path.write_text("Rock song.\nA peaceful sunset on a beach\nOpera singer\n")
    dm = PromptDataModule(train_prompts=str(path), eval_prompts=str(path), batch_size=2, tower=tower)
    dm.trainer = SimpleNamespace(world_size=2)  # DDP's sampler would repeat one prompt
    with pytest.raises(ValueError, match="3 evaluation prompts .*three.txt.* 2 processes"):
        dm.val_dataloader()
    assert len(list(dm.train_dataloader())) == 2  # training draws no repeats that count
    dm.trainer = SimpleNamespace(world_size=3)
    assert len(list(dm.val_dataloader())) == 2
