"""Accuracy of a checkpoint's attribute heads (straight from the visual tokens) and two confusion lists.

usage: python docs/notes/scripts/head_accuracy.py CKPT DATA.jsonl
Separates "the visual side cannot tell" (the heads are wrong too) from "the decoder does not say it".
"""
import sys
from collections import Counter

import torch

from pvlm.attribute_targets import HEAD_FIELDS, IGNORE
from pvlm.checkpoint import load_checkpoint
from pvlm.data import CaptionDataset, collate, load_jsonl

model, vocab, _ = load_checkpoint(sys.argv[1])
model.eval()
ds = CaptionDataset(load_jsonl(sys.argv[2]), vocab, model.cfg, progress=False)
pixels, _, targets = collate([ds[i] for i in range(len(ds))])
with torch.no_grad():
    outs = model.attribute_heads(model.encode_image(pixels))
for i, (f, logits) in enumerate(zip(HEAD_FIELDS, outs)):
    ok = targets[:, i] != IGNORE
    print(f"{f.key:12s} head accuracy {float((logits.argmax(-1)[ok] == targets[ok, i]).float().mean()):.3f}")
keys = [f.key for f in HEAD_FIELDS]
for key in ("carrying", "lower"):
    i = keys.index(key)
    pairs = Counter((HEAD_FIELDS[i].drawn[int(t)], HEAD_FIELDS[i].drawn[int(p)])
                    for t, p in zip(targets[:, i], outs[i].argmax(-1)) if int(t) != IGNORE)
    print(key, "(true, head):", sorted(pairs.items()))
