"""Scratch (session 20): session 19's learned text heads (linear softmax per attribute on
MiniLM of the 20,000 corpus captions, L2 1e-4, as combine.py fits them), their
distributions for SPLIT's prompts saved in lexicon.py's format.  Usage: learned_t.py SPLIT..."""
import sys, torch
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/docs/experiments/session19_scorer")
torch.set_num_threads(1); torch.manual_seed(0)
from common import NAMES, fit_softmax
from suite.models.text_tower import default_tower
from suite.music import corpus as C
from suite.music.oracle import parse_prompt
from suite.music.prompts import load_prompt_records, prompt_set

corpus = C.load("/work/main/artifacts/music_corpus/v4-seed0-n20000")
VALS = {a: sorted({corpus.attrs[i][a] for i in range(len(corpus))}) for a in NAMES}
tower = default_tower()
T = tower.encode(corpus.captions)
parsed = [parse_prompt(c) for c in corpus.captions]
NAMED = {a: torch.tensor([VALS[a].index(p[a]) if p.get(a) in VALS[a] else len(VALS[a]) for p in parsed]) for a in NAMES}
heads = {a: fit_softmax(T, NAMED[a], len(VALS[a]) + 1, 500, 1e-4) for a in NAMES}
for split in sys.argv[1:]:
    prompts = [r["prompt"] for r in load_prompt_records(prompt_set(split, "/work/main"))]
    te = tower.encode(prompts)
    torch.save({"prompts": prompts, "t": {a: torch.softmax(te @ w + b, 1) for a, (w, b) in heads.items()}},
               f"/tmp/s20/learned_{split}.pt")
