"""Scratch (session 20): (1 - W) * A + W * B of two saved text readings (same prompts).
Usage: mix_t.py A.pt B.pt W OUT.pt"""
import sys, torch
a, b, w, out = torch.load(sys.argv[1]), torch.load(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
order = [b["prompts"].index(p) for p in a["prompts"]]
torch.save({"prompts": a["prompts"], "t": {k: (1 - w) * a["t"][k] + w * b["t"][k][order] for k in a["t"]}}, out)
