"""Scratch: generation sets for judge experiments (issue 18)."""
import sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, "/work/main")
from suite.policies.music import MusicPolicy
from suite.music.prompts import prompt_set, load_prompt_records
from suite.judge_diagnostics import SWEEP
from suite.world_diagnostics import sample_cfg_at

which = sys.argv[1]  # eval (validation prompts) | test (test prompts) | train SEED
lm = "/work/main/artifacts/base_lm-9f34ecb56fe5/model.pt"
world = MusicPolicy.from_spec(lm, use_grammar_mask=True)
negative = "Bad audio quality."
if which in ("eval", "test"):  # the diagnostics' seed-0 draw of a held-out split
    split = "validation" if which == "eval" else "eval"
    prompts = [r["prompt"] for r in load_prompt_records(prompt_set(split, "/work/main"))]
    seed, n = 0, 4
else:
    prompts = [r["prompt"] for r in load_prompt_records(prompt_set("train", "/work/main"))]
    seed, n = int(sys.argv[2]), 4
print(len(prompts), "prompts", flush=True)
cond = world.encode_text(prompts).repeat_interleave(n)
every = torch.ones(world.seq_len, dtype=torch.bool)
rows = [p for p in prompts for _ in range(n)]
out = {"tokens": [], "prompt": [], "cond": [], "quality": [], "adherence": []}
t0 = time.time()
for k, (name, use_neg, gamma) in enumerate(SWEEP):
    neg = world.encode_text([negative if use_neg else ""])
    with torch.no_grad():
        tokens = sample_cfg_at(world, cond, neg, gamma, every, 0.99, seed + (k if which == "train" else 0))
    grouped = tokens.view(len(prompts), n, *tokens.shape[1:])
    judged = world.oracle.scores(grouped, prompts)
    out["tokens"].append(tokens[:, 0])
    out["prompt"] += rows
    out["cond"] += [name] * len(rows)
    out["quality"].append(judged["quality"].reshape(-1))
    out["adherence"].append(judged["adherence"].reshape(-1))
    print(name, f"{time.time()-t0:.0f}s", float(judged["quality"].mean()), flush=True)
for k in ("tokens", "quality", "adherence"):
    out[k] = torch.cat(out[k])
torch.save(out, f"/tmp/exp/{which}{sys.argv[2] if which == 'train' else ''}.pt")
