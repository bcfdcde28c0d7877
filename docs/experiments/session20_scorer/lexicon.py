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
Usage: lexicon.py SPLIT (env TAU, PURITY, MINC, CTX, MODE nn | consume)."""
import os, re, sys, collections, torch, numpy as np
sys.path.insert(0, "/work/main")
sys.path.insert(0, "/work/main/docs/experiments/session19_scorer")
torch.set_num_threads(int(os.environ.get("THREADS", 1)))
from common import NAMES
from suite.models.text_tower import default_tower
from suite.music import corpus as C
from suite.music.oracle import parse_prompt
from suite.music.prompts import load_prompt_records, prompt_set

CTX = os.environ.get("CTX", "{}")  # the context each n-gram is embedded in, e.g. "{} music"
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
# MODE=consume: a cue names its attribute when every caption containing it names the
# attribute (>= PURITY) and its value is the most common there (>= 1/2), e.g. "fast" for
# fast although "very fast" shares it; the longest exact match takes its words first
bpm_range = {t: (min(v), max(v)) for t, v in tempo_bpm.items()}
MODE = os.environ.get("MODE", "nn")
vindex = {g: j for j, g in enumerate(vocab)}
major = []  # per vocabulary n-gram: (attribute, majority value) named in >= PURITY of captions
for g in vocab:
    n, per = total[g], collections.defaultdict(collections.Counter)
    for (a, v), k in counts[g].items():
        if v is not None:
            per[a][v] += k
    major.append([(a, c.most_common(1)[0][0]) for a, c in per.items()
                  if sum(c.values()) / n >= PURITY and c.most_common(1)[0][1] / n >= 0.5])
tower = default_tower()
vocab_emb = tower.encode([CTX.format(g) for g in vocab])  # [G, 384]


def one_hot(best: dict) -> dict:
    """attribute -> one-hot over VALS[a] + [not named] from {attribute: (score, value)}."""
    out = {}
    for a in NAMES:
        t = torch.zeros(len(VALS[a]) + 1)
        t[VALS[a].index(best[a][1]) if a in best else -1] = 1.0
        out[a] = t
    return out


def read_consume(prompt: str) -> dict:
    """Exact phase: the corpus vocabulary explains the prompt's known words, longest n-gram
    first (a known word that is no cue is consumed as a frame word). Fuzzy phase: the
    n-grams of the unknown words left take the cues of their nearest corpus n-gram
    (embedded in CTX) when the cosine is >= TAU; an exact cue beats any fuzzy one."""
    words = WORD.findall(prompt.lower())
    used = [False] * len(words)
    best = {}
    for n in (3, 2, 1):
        for i in range(len(words) - n + 1):
            g = " ".join(words[i:i + n])
            if any(used[i:i + n]) or g not in vindex:
                continue
            lab = major[vindex[g]]
            if lab or n == 1:
                used[i:i + n] = [True] * n
            for a, v in lab:
                best.setdefault(a, (1.0, v))
    runs, cur = [], []
    for w, u in zip(words, used):
        if u:
            runs, cur = runs + ([cur] if cur else []), []
        else:
            cur.append(w)
    runs += [cur] if cur else []
    grams = [" ".join(r[i:i + n]) for r in runs for n in (1, 2, 3) for i in range(len(r) - n + 1)]
    if grams:
        sim, nn = (tower.encode([CTX.format(g) for g in grams]) @ vocab_emb.T).max(1)
        for s_, j in zip(sim.tolist(), nn.tolist()):
            if s_ >= TAU:
                for a, v in major[j]:
                    if s_ > best.get(a, (0.0, None))[0]:
                        best[a] = (s_, v)
    b = bpm(prompt)
    if b is not None:
        inside = [t for t, (lo, hi) in bpm_range.items() if lo <= b <= hi]
        best["tempo"] = (1.0, inside[0] if inside else min(bpm_mid, key=lambda t_: abs(bpm_mid[t_] - b)))
    return one_hot(best)


def read(prompt: str) -> dict:
    """MODE=nn: attribute -> distribution over VALS[a] + [not named]: each prompt n-gram takes the
    labels of its nearest corpus n-gram (1-NN over the whole vocabulary, so frame words
    compete with cues) when their cosine is >= TAU; per attribute the best-matched value.
    MODE=consume: read_consume."""
    if MODE == "consume":
        return read_consume(prompt)
    grams = ngrams(prompt)
    sim, nn = (tower.encode([CTX.format(g) for g in grams]) @ vocab_emb.T).max(1)  # [g]
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
    return one_hot(best)

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
               f"/tmp/s20/lex_{split}_tau{TAU}_p{PURITY}" + ("" if CTX == "{}" else "_ctx") + ("" if MODE == "nn" else "_" + MODE) + ".pt")
