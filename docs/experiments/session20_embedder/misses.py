"""Scratch (session 20): where the committed E's held-out same-piece retrieval misses, by the
piece's tempo. The validation of `EmbedderJob` as the build ran it (the AudioDataModule of
the committed spec, seed 0: 500 held-out pieces, the first 3 s against the last 3 s, each
chunk rendered in its own recording), then recall@1 per tempo bucket, and how many of the
32 steps the two chunks share: a 6-s piece loops its 2 bars, so above 80 BPM the two
chunks replay some of the same steps, at 80 BPM none.
Usage: misses.py [E_MODEL_PT]"""
import sys, collections, torch, numpy as np
sys.path.insert(0, "/work/main/docs/experiments/session20_embedder")
from common import COMMITTED_E, validation_embeddings
from suite.music.attributes import TEMPOS

path = sys.argv[1] if len(sys.argv) > 1 else COMMITTED_E
A, B, tempo, dm = validation_embeddings(path)
hit = ((A @ B.T).argmax(1) == torch.arange(len(A))).numpy()
print(f"recall@1 {hit.mean():.3f} over {len(A)} pieces")
bpm = {t[0]: t[3] for t in TEMPOS}
for t, _, _, render_bpm in TEMPOS:
    sel = np.array([x == t for x in tempo])
    steps = 3 * render_bpm / 15  # sixteenths in 3 s
    first = set(range(int(np.ceil(steps))))
    second = {int(s) % 32 for s in np.arange(np.floor(steps), 2 * steps)}
    print(f"{t:9s} {render_bpm} BPM: {sel.sum():3d} pieces, recall@1 {hit[sel].mean():.3f}, "
          f"steps shared by the two chunks {len(first & second)} of 32")

# Within the slow pieces (the two chunks are bar 1 and bar 2, no step shared): E's recall@1
# among them, against the oracle's musical distance between bar 1 looped and bar 2 looped
# (with its header term, and without it: the music of the two bars alone).
from suite.music import oracle_distance as OD
from suite.music import tokens as T
slow = np.flatnonzero([x == "slow" for x in tempo])
idx = dm.val_idx[slow]
tok = dm._tokens[idx].numpy()
steps = tok[:, T.HEADER_LEN:].reshape(len(idx), T.N_STEPS, -1)
half = T.N_STEPS // 2
loop = lambda part: np.concatenate([tok[:, :T.HEADER_LEN], np.concatenate([part, part], 1).reshape(len(idx), -1)], 1)  # noqa: E731
bar1, bar2 = loop(steps[:, :half]), loop(steps[:, half:])
sub = (A[slow] @ B[slow].T).numpy()
print(f"slow pieces among themselves ({len(idx)}): E recall@1 {(sub.argmax(1) == np.arange(len(idx))).mean():.3f}")
D = np.array([[OD.distance(a, b) for b in bar2] for a in bar1])
print(f"  oracle distance, bar 1 looped vs bar 2 looped: recall@1 {(D.argmin(1) == np.arange(len(idx))).mean():.3f}")
same_header = np.array([[tuple(a[:T.HEADER_LEN]) == tuple(b[:T.HEADER_LEN]) for b in bar2] for a in bar1])
print(f"  pieces whose header another slow held-out piece shares: {(same_header.sum(1) > 1).mean():.3f}")
# the music alone: the same distance with every piece's header set to the query's
music = np.array([[OD.distance(a, np.concatenate([a[:T.HEADER_LEN], b[T.HEADER_LEN:]])) for b in bar2] for a in bar1])
print(f"  oracle distance without the header term: recall@1 {(music.argmin(1) == np.arange(len(idx))).mean():.3f}")
# the header E can hear (tempo, key, mode, lead, chords, bass, drums; not genre or mood):
# a judge that read it exactly would confuse only pieces that share all of it
aud = [tuple(r[2:T.HEADER_LEN]) for r in dm._tokens[dm.val_idx].numpy()]
cnt = collections.Counter(aud)
unique = np.array([cnt[a] == 1 for a in aud])
print(f"held-out pieces whose audible header no other held-out piece shares: {unique.mean():.3f} "
      f"(slow: {unique[slow].mean():.3f}); E's recall@1 on them {hit[unique].mean():.3f}, on the rest {hit[~unique].mean():.3f}")
nokey = collections.Counter(a[:1] + a[3:] for a in aud)  # without key and mode
print(f"  ... sharing all but key and mode with another: {np.mean([nokey[a[:1] + a[3:]] > 1 for a in aud]):.3f}")
