"""Scratch (session 20): the text side of the attribute reading as a lexicon learned from
the corpus captions and matched through MiniLM's phrase similarity.

- cue mining: every 1-3-gram of the 20,000 corpus captions seen >= MINC times whose
  captions name one value of an attribute in >= PURITY of cases is a cue for that value
  (labels: what each caption names, as in session 19's text heads);
- BPM: the tempo class of "N bpm" from the corpus captions' ranges (a 1-D nearest-range
  rule learned from the captions);
- a prompt names value v of attribute a when one of its 1-3-grams has MiniLM cosine
  >= TAU with a cue of v (best match wins; exact matches have cosine 1).
Prints the agreement with the oracle's parser per attribute and prompt kind on SPLIT, and
saves the text distributions per prompt for combine (t_a: [P, V+1], last = not named).
Usage: lexicon.py SPLIT (env TAU, PURITY, MINC)."""
import os, re, sys, collections, torch, numpy as np
sys.path.insert(0, "/work/main")
sys.path.insert(0, "/work/main/docs/experiments/session19_scorer")
torch.set_num_threads(int(os.environ.get("THREADS", 1)))
from common import NAMES
from suite.models.text_tower import default_tower
from suite.music import corpus as C
from suite.music.oracle import parse_prompt
from suite.music.prompts import load_prompt_records, prompt_set

TAU, PURITY, MINC = float(os.environ.get("TAU", 0.7)), float(os.environ.get("PURITY", 0.95)), int(os.environ.get("MINC", 10))
WORD = re.compile(r"[a-z0-9#]+(?:[-'][a-z0-9#]+)*")


def ngrams(text: str, n_max: int = 3) -> list[str]:
    w = WORD.findall(text.lower())
    return list(dict.fromkeys(" ".join(w[i:i + n]) for n in range(1, n_max + 1) for i in range(len(w) - n + 1)))


def bpm(text: str):
    m = re.search(r"(\d+)\s*bpm", text.lower())
    return int(m.group(1)) if m else None


corpus = C.load("/work/main/artifacts/music_corpus/v4-seed0-n20000")
VALS = {a: sorted({corpus.attrs[i][a] for i in range(len(corpus))}) for a in NAMES}
parsed = [parse_prompt(c) for c in corpus.captions]
counts = collections.defaultdict(collections.Counter)  # n-gram -> Counter((a, v or None))
total = collections.Counter()
for cap, p in zip(corpus.captions, parsed):
    for g in ngrams(cap):
        total[g] += 1
        for a in NAMES:
            counts[g][(a, p.get(a))] += 1
vocab = [g for g, n in total.items() if n >= MINC]  # [G]: the corpus's phrase vocabulary
labels = []  # per vocabulary n-gram: the (attribute, value) pairs it is a pure cue of
for g in vocab:
    n = total[g]
    labels.append([(a, v) for (a, v), k in counts[g].items() if v is not None and k / n >= PURITY])
cues = [(g, a, v) for g, lab in zip(vocab, labels) for a, v in lab]
tempo_bpm = collections.defaultdict(list)
for cap, p in zip(corpus.captions, parsed):
    b = bpm(cap)
    if b is not None and p.get("tempo"):
        tempo_bpm[p["tempo"]].append(b)
bpm_mid = {t: float(np.median(v)) for t, v in tempo_bpm.items()}
tower = default_tower()
vocab_emb = tower.encode(vocab)  # [G, 384]


def read(prompt: str) -> dict:
    """attribute -> distribution over VALS[a] + [not named]: each prompt n-gram takes the
    labels of its nearest corpus n-gram (1-NN over the whole vocabulary, so frame words
    compete with cues) when their cosine is >= TAU; per attribute the best-matched value."""
    grams = ngrams(prompt)
    sim, nn = (tower.encode(grams) @ vocab_emb.T).max(1)  # [g]
    best = {}
    for s, j in zip(sim.tolist(), nn.tolist()):
        if s < TAU:
            continue
        for a, v in labels[j]:
            if s > best.get(a, (0.0, None))[0]:
                best[a] = (s, v)
    if bpm(prompt) is not None:
        b = bpm(prompt)
        best["tempo"] = (1.0, min(bpm_mid, key=lambda t_: abs(bpm_mid[t_] - b)))
    out = {}
    for a in NAMES:
        t = torch.zeros(len(VALS[a]) + 1)
        t[VALS[a].index(best[a][1]) if a in best else -1] = 1.0
        out[a] = t
    return out

if __name__ == "__main__":
    split = sys.argv[1]
    print(f"{len(vocab)} n-grams, {len(cues)} cues; per attribute", collections.Counter(a for _, a, _ in cues), "bpm", bpm_mid, flush=True)
    recs = load_prompt_records(prompt_set(split, "/work/main"))
    prompts, kinds = [r["prompt"] for r in recs], [r["split"] for r in recs]
    T = [read(p) for p in prompts]
    for a in NAMES:
        truth = [parse_prompt(p).get(a) for p in prompts]
        pred = [None if int(t[a].argmax()) == len(VALS[a]) else VALS[a][int(t[a].argmax())] for t in T]
        hit = np.array([x == y for x, y in zip(truth, pred)])
        per = {k: round(float(hit[np.array(kinds) == k].mean()), 2) for k in sorted(set(kinds))}
        print(f"{a:7s} agreement {hit.mean():.3f} {per}", flush=True)
    torch.save({"prompts": prompts, "t": {a: torch.stack([t[a] for t in T]) for a in NAMES}},
               f"/tmp/s20/lex_{split}_tau{TAU}_p{PURITY}.pt")
