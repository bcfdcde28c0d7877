"""Scratch (session 22): is E's held-out recall held back by its size? Grow the committed E
(3 ViT blocks) to DEPTH blocks without changing what it computes: the new blocks are
appended after the old ones with their residual outputs (attention output projection and
the feed-forward's last layer) zeroed, so each starts as the identity (x + 0 + 0) and the
grown E embeds every clip exactly as the committed one does (checked below). A build then
fine-tunes it with the session-14 schedule, through `init_weights` and a `model_config`
naming the new depth.
Usage: grow.py DEPTH OUT.pt   (e.g. grow.py 6 artifacts/e_depth6_init.pt)"""
import dataclasses
import sys

import torch

sys.path.insert(0, "/work/main")
from suite.models.vit import AudioEmbedder  # noqa: E402

depth, out = int(sys.argv[1]), sys.argv[2]
src = AudioEmbedder.from_checkpoint("/work/main/artifacts/embedder-83f0a752d99d/model.pt").eval()
cfg = src.config
vit = dataclasses.replace(cfg.encoder.vit, depth=depth)
grown = AudioEmbedder(dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, vit=vit))).eval()
missing, unexpected = grown.load_state_dict(src.state_dict(), strict=False)
assert not unexpected, unexpected
old = cfg.encoder.vit.depth
for name in missing:  # only the new blocks' parameters may be missing
    assert any(f"blocks.{i}." in name for i in range(old, depth)), name
with torch.no_grad():
    for name, p in grown.named_parameters():
        if any(f"blocks.{i}." in name for i in range(old, depth)) and (".attn.out." in name or ".ff.3." in name):
            p.zero_()
x = torch.randn(4, 48000)
with torch.no_grad():
    diff = (grown(x) - src(x)).abs().max().item()
print(f"grown {old} -> {depth} blocks; max |grown - committed| on random clips: {diff:.2e}")
assert diff < 1e-5, diff
grown.save(out)
print("config:", grown.config.to_dict())
