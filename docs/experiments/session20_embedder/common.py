"""Scratch helper (sessions 20-23): the held-out validation of `EmbedderJob` as the committed
E's build ran it (the AudioDataModule of the committed spec, seed 0: 500 held-out pieces, the
first 3 s against the last 3 s, each chunk in its own recording), embedded by an E file."""
import sys, torch
sys.path.insert(0, "/work/main")
from datamodules.audio import AudioDataModule
from suite.models.vit import AudioEmbedder

COMMITTED_E = "/work/main/artifacts/embedder-83f0a752d99d/model.pt"


def validation_embeddings(path=COMMITTED_E, on_dm=None):
    """(first-chunk embeddings [P, E], second-chunk [P, E], tempo per piece, the DataModule);
    `on_dm(dm)` may wrap the DataModule's methods before the pieces are rendered."""
    torch.set_num_threads(1); torch.manual_seed(0)
    E = AudioEmbedder.from_checkpoint(path).eval()
    dm = AudioDataModule(task="embedder", n_pieces=20000, corpus_seed=0, batch_size=64, clip_seconds=3.0,
                         pair_augment="shared", recording_augment=True, seed=0, root="/work/main")
    dm.setup("fit")
    if on_dm is not None:
        on_dm(dm)
    A, B, tempo = [], [], []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            batch = dm.on_after_batch_transfer(batch, 0)
            A.append(E(batch["audio_a"])); B.append(E(batch["audio_b"]))
            tempo += [dm._attrs[int(i)]["tempo"] for i in batch["label"]]
    return torch.cat(A), torch.cat(B), tempo, dm


def spy_on_recordings(dm, draws):
    """Wrap `dm._recordings` so each call appends the recording it draws per piece to
    `draws`, in order (query chunk, then target chunk, batch by batch); returns `dm`."""
    from suite.music.attributes import RECORDINGS
    inner = dm._recordings

    def recording_spy(tokens, generator):
        g = torch.Generator()
        g.set_state(generator.get_state())  # replay the draw `inner` is about to make
        draws.append(torch.randint(0, len(RECORDINGS), (tokens.shape[0],), generator=g))
        return inner(tokens, generator)
    dm._recordings = recording_spy
    return dm
