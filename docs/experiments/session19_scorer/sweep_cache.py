"""Scratch (session 19): one draw of the diagnostics' CFG sweep (base model, 6 conditions x
the split's prompts x 4, as `python -m suite diagnose` and judge_check.py draw it), cached
for the session-19 analyses: tokens, the oracle's adherence, the in-use scorer's cosine,
joint audio embedding and trunk features, and E's embeddings.
Usage: sweep_cache.py SPLIT SEED THREADS -> /tmp/s19/sweep_SPLIT_SEED.pt"""
import sys, torch
sys.path.insert(0, "/work/main")
split, seed = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]))
from suite.judge_diagnostics import SWEEP
from suite.models.scorer import MuLanScorer
from suite.models.vit import AudioEmbedder
from suite.music.prompts import load_prompt_records, prompt_set
from suite.policies.music import MusicPolicy
from suite.rollout import embed_audio, policy_audio
from suite.world_diagnostics import sample_cfg_at

world = MusicPolicy.from_spec("/work/main/artifacts/base_lm-9f34ecb56fe5/model.pt", use_grammar_mask=True)
m = MuLanScorer.from_checkpoint("/work/main/artifacts/scorer-bf8bddcc6a22/model.pt").eval()
E = AudioEmbedder.from_checkpoint("/work/main/artifacts/embedder-83f0a752d99d/model.pt").eval()
prompts = [r["prompt"] for r in load_prompt_records(prompt_set(split, "/work/main"))]
n = 4
rows = [p for p in prompts for _ in range(n)]
cond = world.encode_text(prompts).repeat_interleave(n)
every = torch.ones(world.seq_len, dtype=torch.bool)
out = {k: [] for k in ("tokens", "adh", "cos", "emb", "trunk", "E")}
for name, use_negative, gamma in SWEEP:
    neg = world.encode_text(["Bad audio quality." if use_negative else ""])
    with torch.no_grad():
        tokens = sample_cfg_at(world, cond, neg, gamma, every, 0.99, seed)
        judged = world.oracle.scores(tokens.view(len(prompts), n, *tokens.shape[1:]), prompts)
        audio = policy_audio(world, tokens)
        for i in range(0, len(rows), 64):
            f = m.audio_encoder(audio[i:i + 64])
            out["trunk"].append(f)
            out["emb"].append(torch.nn.functional.normalize(m.audio_proj(f), dim=-1))
            out["cos"].append(m.score(audio[i:i + 64], rows[i:i + 64]))
        out["E"].append(embed_audio(E, audio))
    out["tokens"].append(tokens[:, 0])
    out["adh"].append(judged["adherence"].reshape(-1))
    print(split, seed, name, flush=True)
res = {k: torch.cat(v) for k, v in out.items()}
res["prompts"] = prompts
res["conditions"] = [s[0] for s in SWEEP]
torch.save(res, f"/tmp/s19/sweep_{split}_{seed}.pt")
