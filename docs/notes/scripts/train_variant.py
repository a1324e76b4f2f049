"""Train like the quickstart with preset or training overrides (issue 13's table).

usage: python docs/notes/scripts/train_variant.py OUT [key=value ...] [t.key=value ...]
  key=value    overrides the lite0 preset (e.g. freeze_ratio=0.7 attribute_heads=False)
  t.key=value  overrides TrainConfig (e.g. t.backbone_lr_scale=0.1 t.attribute_weight=1.0)
PVLM_DATA: the quickstart's data folder (train.jsonl, val.jsonl); default runs/quickstart/data.
"""
import ast
import json
import logging
import os
import sys

from pvlm import model as model_mod
from pvlm.train import TrainConfig, train

logging.basicConfig(level=logging.INFO)
out, overrides, train_overrides = sys.argv[1], {}, {}
for kv in sys.argv[2:]:
    key, value = kv.split("=", 1)
    (train_overrides if key.startswith("t.") else overrides)[key.removeprefix("t.")] = ast.literal_eval(value)
model_mod.PRESETS["lite0"] = {**model_mod.PRESETS["lite0"], **overrides}
data = os.environ.get("PVLM_DATA", "runs/quickstart/data")
cfg = TrainConfig(train=f"{data}/train.jsonl", val=f"{data}/val.jsonl", out=out, preset="lite0", epochs=8,
                  batch_size=32, lr=2e-3, warmup_steps=100, min_freq=2, seed=0, cache_copies=2, threads=1,
                  progress=False, **train_overrides)
print(json.dumps(train(cfg)["epochs"]))
