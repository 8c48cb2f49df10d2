"Ship an exported generator: metrics against held-out phantom pairs, bounds for the tests, model card."
import json, sys, time, platform, os
import numpy as np, torch
from tof3dgan.pretrained import write_model_card, vessel_metrics, sample_pairs
from tof3dgan.generate import load_generator
from tof3dgan.phantom import phantom_pairs
weights, name, root, info_p = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
info = json.load(open(info_p))
g, cfg = load_generator(weights, "cpu")
REF_SEED, N, BS = 7, 64, info.get("batch_size", 8)
ref = phantom_pairs(N, cfg.patch, cfg.phantom_shape, cfg.spacing, seed=REF_SEED, progress=False)
syn = sample_pairs(g, cfg, N, seed=0, batch_size=BS)
m = vessel_metrics(syn, ref, cfg.spacing)
m.update(sample_seed=0, reference_seed=REF_SEED)
s, r = m["synthetic"], m["real"]
checks = {"n_samples": 32, "sample_seed": 0, "batch_size": BS,
          "components_max": round(max(2 * s["components"], 2 * r["components"]), 2),
          "largest_fraction_min": round(min(s["largest_fraction"], r["largest_fraction"]) - 0.1, 3),
          "label_fraction_range": [round(r["label_fraction"] / 4, 5), round(4 * r["label_fraction"], 5)],
          "empty_labels_max": round(max(0.25, s["empty_labels"] + 0.15), 3),
          "label_fidelity_min": round(max(0.1, s["label_fidelity"] - 0.15), 3)}
card = write_model_card(weights, name, root, info["summary"], intended_use=info["intended_use"], limitations=info["limitations"],
                        data=info["data"], training=info["training"],
                        sampling={"bn": cfg.sample_bn, "batch_size": BS, "threshold": cfg.threshold, "label_encoding": cfg.label_encoding},
                        metrics=m, checks=checks)
print(json.dumps({k: card[k] for k in ("name", "sha256", "size_bytes", "n_parameters", "metrics", "checks")}, indent=1))
