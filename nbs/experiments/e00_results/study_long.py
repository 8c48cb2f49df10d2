"""Continue the phantom-tof-v2 run (X_w128, 18,000 steps) with the trainer's own weight average (g_ema 0.9999), reading out
the last weights and the average every `every` steps with the same protocol as study_ema.py (32 samples, z seed 123, against
32 held-out pairs). `lr_scale` < 1 continues with smaller learning rates (an annealing phase); N_CRITIC=2 in the
environment continues with two critic updates per generator step.

    python study_long.py NAME SRC_CHECKPOINT SRC_AVERAGE TRAIN.npy REF.npy MAX_STEPS EVERY OUT LR_SCALE [MAX_CPU_SECONDS]

A first call seeds OUT/checkpoints from the plain run's epoch checkpoint SRC_CHECKPOINT and the study's average
SRC_AVERAGE (study_ema.py's ema0.9999_stepNNNNNN.pt); a branch is started by copying an epoch checkpoint of another
OUT/checkpoints into a new OUT/checkpoints (SRC_* are then not read). Every read-out also writes OUT/ema_stepNNNNNN.pt
(a checkpoint holding the average, for `tof3dgan export`). KEEP_LAST (default 1, as in the stored runs) keeps that
many epoch checkpoints, so that branches can start from earlier epochs."""
import json, os, sys, time
from dataclasses import replace
from pathlib import Path
import numpy as np, torch
from tof3dgan.core import get_preset
from tof3dgan.train import Trainer
from tof3dgan.checkpoint import load_checkpoint, save_checkpoint
from tof3dgan.sampling import sample, binarise_output
from tof3dgan.metrics.topology import topology_compare, label_fidelity
from tof3dgan.metrics.seg import calibrate_threshold, threshold_segmenter

name, src, ema_src, data_p, ref_p, steps, every, out, lr_scale = sys.argv[1:10]
steps, every, lr_scale = int(steps), int(every), float(lr_scale)
cpu_max = float(sys.argv[10]) if len(sys.argv) > 10 else 1e9
data = np.ascontiguousarray(np.load(data_p, mmap_mode="r"))
ref = np.load(ref_p)
rsel = ref[np.random.default_rng(0).choice(len(ref), 32, replace=False)]
cfg = get_preset("demo", n_train=len(data), snapshot_n=0, keep_last=int(os.environ.get("KEEP_LAST", 1)), patch=tuple(data.shape[2:]), width=128, g_ema=0.9999)
out = Path(out)
if not (out / "checkpoints").exists():          # seed the run folder: the plain run's checkpoint + the study's average
    ck = load_checkpoint(src); ema = torch.load(ema_src, map_location="cpu", weights_only=False)
    assert ck["step"] == ema["step"], (ck["step"], ema["step"])
    ck.pop("format", None); ck["config"]["g_ema"] = 0.9999; ck["G_ema"] = ema["G"]
    (out / "checkpoints").mkdir(parents=True)
    save_checkpoint(ck, out / "checkpoints" / Path(src).name)
t_thr = calibrate_threshold(rsel[:, 0], rsel[:, 1]); seg = threshold_segmenter(t_thr)
tr = Trainer(cfg, data, out, device="cpu", resume=True, progress=False, tensorboard=False)
n_critic = int(os.environ.get("N_CRITIC", cfg.n_critic))
if n_critic != cfg.n_critic: tr.cfg = replace(tr.cfg, n_critic=n_critic)   # a branch with more critic updates per step
if lr_scale != 1:
    for o in (tr.opt_g, tr.opt_d):
        for g in o.param_groups: g["lr"] *= lr_scale
    tr.cfg = replace(tr.cfg, lr_d=cfg.lr_d * lr_scale, lr_g=cfg.lr_g * lr_scale)
spe = len(data) // cfg.batch_size
z = torch.randn(32, cfg.z_dim, generator=torch.Generator().manual_seed(123))
log = open(f"{out}.jsonl", "a")
def measure(G):
    fake = torch.cat([sample(G, z[i:i + 8], "train") for i in range(0, 32, 8)]).numpy()
    lab = binarise_output(fake[:, 1], cfg.threshold, cfg.label_encoding).astype(np.uint8)
    s, df = topology_compare(rsel[:, 1], lab, cfg.spacing, progress=False)
    syn = df[df.set == "synthetic"]
    fid = label_fidelity(fake[:, 0], lab, seg, progress=False)
    return {"frac": float(lab.mean()), "empty": float((lab.reshape(32, -1).sum(1) == 0).mean()),
            "comp": float(syn.n_components.mean()), "largest": float(syn.largest_fraction.mean()),
            "comp_med": float(syn.n_components.median()),
            "w1_radius": s["skeleton_radius"]["wasserstein"], "w1_comp": s["n_components"]["wasserstein"],
            "fidelity": float(np.nanmean(fid))}
def assess():
    row = {"name": name, "step": tr.step, "epoch": tr.epoch, "lr_scale": lr_scale, "n_critic": tr.cfg.n_critic,
           "seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}
    row["train"] = measure(tr.G)
    tr.G_ema.train(); row["ema0.9999"] = measure(tr.G_ema)
    st = tr.state(); [st.pop(k) for k in ("opt_g", "opt_d", "D", "G")]
    save_checkpoint(st, out / f"ema_step{tr.step:06d}.pt")
    h = tr.history[-min(len(tr.history), 200):]
    if h: row["wdist"] = float(np.mean([r["wdist"] for r in h])); row["loss_g"] = float(np.mean([r["loss_g"] for r in h]))
    log.write(json.dumps(row) + "\n"); log.flush(); print(json.dumps(row), flush=True)
t0, c0 = time.time(), time.process_time()
assess()
ep = tr.epoch
while tr.step < steps and time.process_time() - c0 < cpu_max and not Path(f"{out}.stop").exists():
    ep += max(1, round(every / spe))
    tr.fit(ep)
    assess()
