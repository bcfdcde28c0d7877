"""Scratch (session 16): swap_accuracy.py on GENERATIONS instead of corpus pieces: the base
model's CFG-sweep generations for the validation prompts (as `python -m suite diagnose`
draws them, one seed), each captioned from the header attributes it was generated with
(`tokens.decode`; the renderer plays them) and its attribute-swapped twins. Per attribute,
the share of generations whose render scores the true caption above the twin (chance 0.5).
Usage: swap_accuracy_generations.py SEED SCORER... (one torch thread)."""
import sys, torch
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from suite.judge_diagnostics import SWEEP
from suite.models.scorer import MuLanScorer
from suite.models.text_tower import default_tower
from suite.music import tokens as T
from suite.music.prompts import load_prompt_records, prompt_set
from suite.music.swaps import SWAPPABLE, swap_table
from suite.policies.music import MusicPolicy
from suite.rollout import policy_audio
from suite.world_diagnostics import sample_cfg_at

seed, paths = int(sys.argv[1]), sys.argv[2:]
world = MusicPolicy.from_spec("/work/main/artifacts/base_lm-9f34ecb56fe5/model.pt", use_grammar_mask=True)
prompts = [r["prompt"] for r in load_prompt_records(prompt_set("validation", "/work/main"))]
n = 4
cond = world.encode_text(prompts).repeat_interleave(n)
every = torch.ones(world.seq_len, dtype=torch.bool)
audio, attrs = [], []
for name, use_negative, gamma in SWEEP:
    neg = world.encode_text(["Bad audio quality." if use_negative else ""])
    with torch.no_grad():
        tokens = sample_cfg_at(world, cond, neg, gamma, every, 0.99, seed)
        audio.append(policy_audio(world, tokens).reshape(len(prompts) * n, -1))
    attrs += [{k: v for k, v in T.decode(row).attrs.items() if k != "recording"}
              for row in tokens.reshape(len(prompts) * n, -1).tolist()]
audio = torch.cat(audio)
texts, negatives = swap_table(attrs, 1, seed=123)
tower = default_tower()
for path in paths:
    m = MuLanScorer.from_checkpoint(path).eval()
    with torch.no_grad():
        a = torch.cat([m.embed_audio(audio[i:i + 64]) for i in range(0, len(audio), 64)])
        own = (a * m.embed_text(tower.encode(texts))).sum(-1)
        line = []
        for k, name in enumerate(SWAPPABLE):
            rows = [i for i, neg in enumerate(negatives) if neg[k] is not None]
            s = m.embed_text(tower.encode([negatives[i][k] for i in rows]))
            wins = (own[rows] > (a[rows] * s).sum(-1)).float().mean().item()
            line.append(f"{name} {wins:.3f} (n {len(rows)})")
    print(path, "|", "; ".join(line), flush=True)
