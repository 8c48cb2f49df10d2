"""Training benchmark: iterations/s, samples/s, peak memory and achieved FLOP/s per preset and precision, the fast
path against a naive reference loop that mirrors the authors' algorithm, and generation speed.

    python bench/bench_train.py                 # CPU: presets scaled to width 64 (c-SN-MP: 128), 32x32x16 patches
    python bench/bench_train.py --paper         # GPU: the paper's configurations (128x128x64, batch 4), fp32/fp16/bf16, compile
    python bench/bench_train.py --steps 3 --quick   # a seconds-long smoke run (used by the tests)

Each configuration runs in its own subprocess (so peak memory is its own); the reference-vs-ours comparison runs both
loops alternately in one process. Prints a table and writes bench/results/train_<cpu|gpu>.json. Never a timed test."""
import argparse, json, os, resource, subprocess, sys, time
from pathlib import Path
import numpy as np
import torch
sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine, table

VARIANTS = {"gp": "paper_gp", "sn": "paper_sn", "sn_mp": "paper_sn_mp", "c_sn_mp": "paper_c_sn_mp"}

def _cfg(spec):
    from tof3dgan.core import get_preset
    o = dict(spec.get("overrides", {}))
    return get_preset(spec["preset"], snapshot_n=0, **o)

def _peak_flops(device, dtype):
    n = 2048 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype); b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3): a @ b
    if device.type == "cuda": torch.cuda.synchronize()
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        a @ b; k += 1
    if device.type == "cuda": torch.cuda.synchronize()
    return 2 * n ** 3 * k / (time.perf_counter() - t0)

def _batch(cfg, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(cfg.batch_size, 2, *cfg.patch, generator=g) * 2 - 1
    x[:, 1] = (x[:, 1] > 0.9).float()
    return x.to(device)

def worker(spec):
    "Time one configuration; print a JSON line."
    import tempfile
    from torch.utils.flop_counter import FlopCounterMode
    from tof3dgan.train import Trainer
    from tof3dgan.sampling import sample
    device = torch.device(spec["device"])
    cfg = _cfg(spec)
    data = np.zeros((cfg.batch_size, 2, *cfg.patch), np.float32)
    tr = Trainer(cfg, data, Path(tempfile.mkdtemp()) / "r", device=str(device), progress=False, tensorboard=False)
    real, noise = _batch(cfg, device), torch.Generator().manual_seed(0)
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats()
    for _ in range(spec["warmup"]): tr.train_step(real, noise)
    with FlopCounterMode(display=False) as fc: out = tr.train_step(real, noise)
    flops = fc.get_total_flops()
    if device.type == "cuda": torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(spec["steps"]):
        out = tr.train_step(real, noise)
        if (i + 1) % cfg.log_every == 0: [v.item() for v in out.values()]   # the trainer's read-out interval
    [v.item() for v in out.values()]
    if device.type == "cuda": torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / spec["steps"]
    z = torch.randn(cfg.batch_size, cfg.z_dim, device=device)
    sample(tr.G, z); t1 = time.perf_counter(); k = max(2, spec["steps"] // 2)
    for _ in range(k): sample(tr.G, z)
    if device.type == "cuda": torch.cuda.synchronize()
    gen = k * cfg.batch_size / (time.perf_counter() - t1)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"it_s": 1 / dt, "samples_s": cfg.batch_size / dt, "flops_step": flops, "peak_mb": peak,
                      "gen_patches_s": gen, "finite": all(bool(torch.isfinite(v)) for v in out.values())}))

def reference_step(G, D, opt_g, opt_d, real, z_dim, lam=10.0):
    "The authors' loop as published: penalty through G (fake not detached), one eps and one norm per batch, fp32, .item() every step."
    z = torch.randn(real.shape[0], z_dim, device=real.device)
    fake = G(z)
    d_real, d_fake = D(real).mean(), D(fake.detach()).mean()
    eps = torch.rand(1, device=real.device)
    x_hat = eps * real + (1 - eps) * fake                       # not detached: the penalty's backward runs through G
    grad = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)[0]
    gp = (grad.norm(2) - 1) ** 2
    loss_d = d_fake - d_real + lam * gp
    opt_d.zero_grad(); loss_d.backward(); opt_d.step()
    z = torch.randn(real.shape[0], z_dim, device=real.device)
    loss_g = -D(G(z)).mean()
    opt_g.zero_grad(); loss_g.backward(); opt_g.step()
    return loss_d.item(), loss_g.item(), gp.item()              # host syncs every step

def pair(spec):
    "Reference loop vs tof3dgan's trainer, alternating in one process on the same networks' architecture."
    import tempfile
    from tof3dgan.networks import build_models
    from tof3dgan.train import Trainer
    device = torch.device(spec["device"])
    cfg = _cfg(spec)
    G, D = build_models(cfg, device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas); opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    fast = {k: Trainer(_cfg({**spec, "overrides": {**spec.get("overrides", {}), **o}}), np.zeros((cfg.batch_size, 2, *cfg.patch), np.float32),
                       Path(tempfile.mkdtemp()) / "r", device=str(device), progress=False, tensorboard=False)
            for k, o in (("ours", {}), ("ours_reuse_fake", {"reuse_fake": True}), ("ours_channels_last", {"channels_last": True}),
                         ("ours_channels_last_reuse_fake", {"channels_last": True, "reuse_fake": True}))}
    real, noise = _batch(cfg, device), torch.Generator().manual_seed(0)
    def t_ref():
        t0 = time.perf_counter()
        for _ in range(spec["steps"]): reference_step(G, D, opt_g, opt_d, real, cfg.z_dim)
        if device.type == "cuda": torch.cuda.synchronize()
        return (time.perf_counter() - t0) / spec["steps"]
    def t_fast(tr):
        t0 = time.perf_counter()
        for i in range(spec["steps"]):
            out = tr.train_step(real, noise)
            if (i + 1) % cfg.log_every == 0: [v.item() for v in out.values()]
        [v.item() for v in out.values()]
        if device.type == "cuda": torch.cuda.synchronize()
        return (time.perf_counter() - t0) / spec["steps"]
    t_ref(); [t_fast(t) for t in fast.values()]                 # warm-up
    res = {"reference": [], **{k: [] for k in fast}}
    for _ in range(spec["repeats"]):
        res["reference"].append(t_ref())
        for k, t in fast.items(): res[k].append(t_fast(t))
    print(json.dumps({k: float(np.median(v)) for k, v in res.items()}))

def _run(kind, spec):
    r = subprocess.run([sys.executable, __file__, kind, json.dumps(spec)], capture_output=True, text=True, timeout=3600)
    if r.returncode != 0: return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--paper", action="store_true", help="the paper's configurations (GPU)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    ap.add_argument("--steps", type=int, default=10); ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to start)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from tof3dgan.core import resolve_device
    dev = resolve_device(a.device)
    if a.paper: base, cw = {}, {}
    elif a.quick: base, cw = {"width": 16, "patch": (32, 32, 16), "batch_size": 2}, {"width": 32}
    else: base, cw = {"width": 64, "patch": (32, 32, 16), "batch_size": 4}, {"width": 128}
    precisions = ["fp32", "bf16", "fp16"] if dev.type == "cuda" or not a.quick else ["fp32", "bf16"]
    specs = []
    for v, preset in VARIANTS.items():
        for p in precisions:
            ov = {**base, **(cw if v == "c_sn_mp" else {}), "precision": p}
            specs.append({"name": f"{v}", "preset": preset, "overrides": ov, "precision": p})
            if a.compile and p != "fp16": specs.append({"name": f"{v}+compile", "preset": preset, "overrides": {**ov, "compile": True}, "precision": p})
    for extra, o in (("sn+channels_last", {"channels_last": True}), ("sn+fused_adam", {"fused_adam": True}),
                     ("sn+reuse_fake", {"reuse_fake": True}), ("sn+grad_checkpoint", {"grad_checkpoint": True})):
        specs.append({"name": extra, "preset": "paper_sn", "overrides": {**base, **o, "precision": "fp32"}, "precision": "fp32"})
    m = machine()
    peak = {"fp32": _peak_flops(dev, torch.float32), "bf16": _peak_flops(dev, torch.bfloat16)}
    peak["fp16"] = _peak_flops(dev, torch.float16) if dev.type == "cuda" else peak["bf16"]
    rows = []
    for s in specs:
        s = {**s, "device": str(dev), "steps": a.steps, "warmup": 2}
        r = _run("--worker", s)
        row = {"config": s["name"], "precision": s["precision"], "width": s["overrides"].get("width", 1024 if s["name"].startswith("c_") else 512),
               "patch": "x".join(map(str, s["overrides"].get("patch", (128, 128, 64)))), "batch": s["overrides"].get("batch_size", 4)}
        if "error" in r: row["note"] = r["error"][:80]
        else:
            row.update({"it/s": f"{r['it_s']:.2f}", "samples/s": f"{r['samples_s']:.2f}", "peak MB": f"{r['peak_mb']:.0f}",
                        "GFLOP/step": f"{r['flops_step'] / 1e9:.1f}", "TFLOP/s": f"{r['flops_step'] * r['it_s'] / 1e12:.3f}",
                        "% of peak": f"{100 * r['flops_step'] * r['it_s'] / peak[s['precision']]:.1f}",
                        "gen patches/s": f"{r['gen_patches_s']:.1f}",
                        "100-epoch h (2,350 pairs)": f"{100 * 2350 / r['samples_s'] / 3600:.1f}"})
        rows.append(row); print(f"  {row['config']:<20} {row['precision']:<5} {row.get('samples/s', row.get('note'))}", file=sys.stderr)
    pr = _run("--pair", {"preset": "paper_sn", "overrides": {**base, "precision": "fp32"}, "device": str(dev),
                         "steps": a.steps, "repeats": 3})
    cols = ["config", "precision", "width", "patch", "batch", "it/s", "samples/s", "peak MB", "GFLOP/step", "TFLOP/s", "% of peak",
            "gen patches/s", "100-epoch h (2,350 pairs)", "note"]
    print(f"machine: {m}\nmatmul peak TFLOP/s: " + ", ".join(f"{k} {v / 1e12:.3f}" for k, v in peak.items()) + "\n")
    print(table(rows, cols))
    if "error" not in pr:
        print(f"\nsame process, paper_sn architecture at {base or 'paper size'}, fp32, median of 3 x {a.steps} steps:")
        print(table([{"loop": k, "s/step": f"{v:.4f}", "speed-up vs reference": f"{pr['reference'] / v:.2f}x"} for k, v in pr.items()],
                    ["loop", "s/step", "speed-up vs reference"]))
    else: print(f"\nreference comparison failed: {pr['error']}")
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"train_{'gpu' if dev.type == 'cuda' else 'cpu'}{'_quick' if a.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": m, "peak_flops": peak, "rows": rows, "reference_vs_ours": pr, "args": vars(a)}, indent=2) + "\n")
    print(f"\nwrote {out}")

if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker": worker(json.loads(sys.argv[2]))
    elif len(sys.argv) > 2 and sys.argv[1] == "--pair": pair(json.loads(sys.argv[2]))
    else: main()
