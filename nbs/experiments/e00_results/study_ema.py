"Long training runs with topology / label-fidelity read-outs of the raw generator and of exponential moving averages of its weights."
import copy, json, sys, time, os
from pathlib import Path
import numpy as np, torch
from tof3dgan.core import get_preset
from tof3dgan.train import Trainer
from tof3dgan.sampling import sample, binarise_output
from tof3dgan.metrics.topology import topology_compare, label_fidelity
from tof3dgan.metrics.seg import calibrate_threshold, threshold_segmenter

name, over, data_p, ref_p, steps, every, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
cpu_max = float(sys.argv[8]) if len(sys.argv) > 8 else 1e9
decays = over.pop("ema", [0.999])
data = np.load(data_p, mmap_mode="r"); data = np.ascontiguousarray(data[: over.pop("n_use", len(data))])
ref = np.load(ref_p)
rsel = ref[np.random.default_rng(0).choice(len(ref), 32, replace=False)]
cfg = get_preset(over.pop("preset", "demo"), **{"n_train": len(data), "snapshot_n": 0, "keep_last": over.pop("keep_last", 1), "patch": tuple(data.shape[2:]), **over})
t_thr = calibrate_threshold(rsel[:, 0], rsel[:, 1])
seg = threshold_segmenter(t_thr)
real_fid = float(np.nanmean(label_fidelity(rsel[:, 0], rsel[:, 1], seg, progress=False)))
tr = Trainer(cfg, data, out, device="cpu", progress=False, tensorboard=False)
emas = {d: copy.deepcopy(tr.G) for d in decays}
for e in emas.values(): e.requires_grad_(False)
_orig = tr.train_step
def train_step(real, noise):
    row = _orig(real, noise)
    t = tr.step  # steps done before this one
    with torch.no_grad():
        gp = [p.detach() for p in tr.G.parameters()]; gb = list(tr.G.buffers())
        for d, e in emas.items():
            dd = min(d, (1 + t) / (10 + t))
            torch._foreach_lerp_([p for p in e.parameters()], gp, 1 - dd)
            for b, sb in zip(e.buffers(), gb): b.copy_(sb)
    return row
tr.train_step = train_step
spe = len(data) // cfg.batch_size
z = torch.randn(32, cfg.z_dim, generator=torch.Generator().manual_seed(123))
log = open(f"{out}.jsonl", "a")
def measure(G, bn):
    fake = torch.cat([sample(G, z[i:i + 8], bn) for i in range(0, 32, 8)]).numpy()
    lab = binarise_output(fake[:, 1], cfg.threshold, cfg.label_encoding).astype(np.uint8)
    s, df = topology_compare(rsel[:, 1], lab, cfg.spacing, progress=False)
    syn = df[df.set == "synthetic"]
    fid = label_fidelity(fake[:, 0], lab, seg, progress=False)
    return {"frac": float(lab.mean()), "empty": float((lab.reshape(32, -1).sum(1) == 0).mean()),
            "comp": float(syn.n_components.mean()), "largest": float(syn.largest_fraction.mean()),
            "comp_med": float(syn.n_components.median()),
            "w1_radius": s["skeleton_radius"]["wasserstein"], "w1_comp": s["n_components"]["wasserstein"],
            "fidelity": float(np.nanmean(fid))}, s
def assess():
    row = {"name": name, "step": tr.step, "epoch": tr.epoch, "seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}
    row["train"], s = measure(tr.G, "train")
    if tr.step == 0:
        row["real"] = {"frac": float(rsel[:, 1].mean()), "comp": s["n_components"]["real_mean"], "largest": s["largest_fraction"]["real_mean"],
                       "fidelity": real_fid, "threshold": t_thr}
    for d, e in emas.items():
        e.train()
        row[f"ema{d}"], _ = measure(e, "train")
        if tr.step:
            st = tr.state(); st["G"] = e.state_dict(); st.pop("opt_g"); st.pop("opt_d"); st.pop("D")
            torch.save(st, Path(out) / f"ema{d}_step{tr.step:06d}.pt")
    h = tr.history[-min(len(tr.history), 200):]
    if h: row["wdist"] = float(np.mean([r["wdist"] for r in h])); row["loss_g"] = float(np.mean([r["loss_g"] for r in h]))
    log.write(json.dumps(row) + "\n"); log.flush()
    print(json.dumps(row), flush=True)
t0, c0 = time.time(), time.process_time()
assess()
ep = 0
while tr.step < steps and time.process_time() - c0 < cpu_max and not Path(out + ".stop").exists():
    ep += max(1, round(every / spe))
    tr.fit(ep)
    assess()
