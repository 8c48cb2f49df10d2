"Evaluate epoch checkpoints at several label thresholds: 64 samples (seed 0, batch 8) vs 64 held-out pairs (seed 7)."
import json, sys, glob
import numpy as np, torch
from tof3dgan.generate import load_generator
from tof3dgan.pretrained import sample_pairs, vessel_metrics
ref = np.load("/tmp/mdl/p32_ref.npy")[:64]
out = open(sys.argv[1], "a")
for ck in sys.argv[2:]:
    g, cfg = load_generator(ck, "cpu")
    e = torch.load(ck, map_location="cpu", weights_only=True)["epoch"] if ck.endswith(".pt") else None
    for thr in (0.2, 0.3, 0.4, 0.5):
        m = vessel_metrics(sample_pairs(g, cfg, 64, seed=0, batch_size=8, threshold=thr), ref, cfg.spacing)
        row = {"ckpt": ck, "epoch": e, "threshold": thr, **m}
        out.write(json.dumps(row) + "\n"); out.flush()
        s = m["synthetic"]
        print(ck.split("/")[-1], e, thr, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}, round(m["skeleton_radius_w1_mm"] or -1, 3), flush=True)
