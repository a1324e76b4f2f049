import os
os.makedirs("/tmp/pvlm-notes", exist_ok=True)  # scratch bundles
exec(open(os.path.join(os.path.dirname(__file__), "enc_exp.py")).read().split("names = [nd.name")[0])
import torch
run("plan only", set())
d = Describer(Path("/tmp/pvlm-notes/cand"), backend="onnxruntime-cpu", precision="fp16", verify=False)
got = []
for s in range(0, n, 16):
    got += d.generate_ids(pixels[s:s + 16], 48)[0]
bos = model.cfg.bos_id
gaps_all = []
with torch.no_grad():
    for i in range(n):
        seq = want[i]
        ids = torch.tensor([[bos] + seq])
        logits = model(torch.from_numpy(pixels[i:i+1]), ids)[0]  # (T, V)
        top2 = logits.topk(2, dim=-1).values
        gap = (top2[:, 0] - top2[:, 1]).numpy()
        gaps_all.append(gap.min())
        if got[i] != seq:
            k = next((j for j, (a, b) in enumerate(zip(got[i], seq)) if a != b), min(len(got[i]), len(seq)))
            print(f"image {i}: diverges at step {k}, FP32 top1-top2 logit gap there {gap[k]:.4f}")
import numpy as np
g = np.array(gaps_all)
print("smallest gap per sequence: median %.3f, <0.05: %d, <0.1: %d of %d" % (np.median(g), (g < .05).sum(), (g < .1).sum(), n))
