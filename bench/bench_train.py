"""Training benchmark: iterations/s, samples/s, peak memory and achieved FLOP/s per preset and precision, the fast
path against a naive reference loop that mirrors the authors' algorithm, and generation speed.

    python bench/bench_train.py                 # CPU: presets scaled to width 64 (c-SN-MP: 128), 32x32x16 patches
    python bench/bench_train.py --paper         # GPU: the paper's configurations (128x128x64, batch 4), fp32/fp16/bf16, compile
    python bench/bench_train.py --paper-cpu     # CPU: the ladder below at the paper's patch size, widths 32 and 64 (~15 min)
    python bench/bench_train.py --steps 3 --quick   # a seconds-long smoke run (used by the tests)

Each configuration runs in its own subprocess (so peak memory is its own). The ladder runs, alternately in one process,
a reference loop that reproduces the authors' algorithm and tof3dgan's trainer with its fast path off, then with each
speed setting added in turn (the device's defaults last), then the opt-in options that change the algorithm.
Prints tables and writes bench/results/train_<cpu|gpu|paper_cpu>.json. Never a timed test."""
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

OFF = {"channels_last": False, "fused_adam": False, "fused_upsample": False}
LADDER = [("ours, fast path off", {}),                                   # each row adds to the one above it
          ("+ channels_last", {"channels_last": True}),
          ("+ fused_adam", {"channels_last": True, "fused_adam": True}),
          ("+ fused_upsample", {"channels_last": True, "fused_adam": True, "fused_upsample": True}),
          ("defaults", {"channels_last": None, "fused_adam": None, "fused_upsample": None}),
          ("defaults + reuse_fake (opt-in)", {"channels_last": None, "fused_adam": None, "fused_upsample": None, "reuse_fake": True}),
          ("defaults + bf16 (opt-in)", {"channels_last": None, "fused_adam": None, "fused_upsample": None, "precision": "bf16"})]

def pair(spec):
    "The reference loop and tof3dgan's trainer up the LADDER, alternating in one process, the same architecture."
    import tempfile
    from tof3dgan.networks import build_models
    from tof3dgan.train import Trainer
    device = torch.device(spec["device"])
    cfg = _cfg(spec)
    G, D = build_models(cfg, device)                             # contiguous, two-layer upsample+conv, for-loop Adam: as published
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas); opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    ladder = [(k, o) for k, o in LADDER if not (device.type == "cuda" and "bf16" in k)]
    fast = {k: Trainer(_cfg({**spec, "overrides": {**spec.get("overrides", {}), **OFF, **o}}),
                       np.zeros((cfg.batch_size, 2, *cfg.patch), np.float32), Path(tempfile.mkdtemp()) / "r", device=str(device),
                       progress=False, tensorboard=False) for k, o in ladder}
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
    reference_step(G, D, opt_g, opt_d, real, cfg.z_dim); [t.train_step(real, noise) for t in fast.values()]   # warm-up, one step each
    res = {"reference": [], **{k: [] for k in fast}}
    for _ in range(spec["repeats"]):
        res["reference"].append(t_ref())
        for k, t in fast.items(): res[k].append(t_fast(t))
    print(json.dumps({"s_per_step": {k: float(np.median(v)) for k, v in res.items()}, "all": res,
                      "fast_path": {k: t.fast for k, t in fast.items()}}))

def ladder_table(pr: dict) -> list:
    "Rows of the ladder: s/step, speed-up against the reference and against the row above (the opt-in rows: against the defaults)."
    s, rows, prev = pr["s_per_step"], [], None
    for k, v in s.items():
        base = s.get("defaults") if "opt-in" in k else prev
        rows.append({"loop": k, "s/step": f"{v:.3f}", "vs reference": f"{s['reference'] / v:.2f}x",
                     "vs row above": f"{base / v:.2f}x" if base and not k.startswith("ours, fast") else ""})
        prev = v
    return rows

def _run(kind, spec):
    r = subprocess.run([sys.executable, __file__, kind, json.dumps(spec)], capture_output=True, text=True, timeout=3600)
    if r.returncode != 0: return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--paper", action="store_true", help="the paper's configurations (GPU)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    ap.add_argument("--paper-cpu", action="store_true", help="only the ladder, at the paper's patch size, widths 32 and 64 (CPU)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds of the ladder (median reported)")
    ap.add_argument("--adam", action="store_true", help="only the optimiser step: foreach against fused Adam, widths 32 and 512")
    ap.add_argument("--steps", type=int, default=10); ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to start)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from tof3dgan.core import resolve_device
    dev = resolve_device(a.device)
    if a.paper_cpu: return paper_cpu(a, dev)
    if a.adam: return adam(a, dev)
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
    for extra, o in (("sn, fast path off", OFF), ("sn+reuse_fake", {"reuse_fake": True}), ("sn+grad_checkpoint", {"grad_checkpoint": True})):
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
                         "steps": a.steps, "repeats": a.repeats})
    cols = ["config", "precision", "width", "patch", "batch", "it/s", "samples/s", "peak MB", "GFLOP/step", "TFLOP/s", "% of peak",
            "gen patches/s", "100-epoch h (2,350 pairs)", "note"]
    print(f"machine: {m}\nmatmul peak TFLOP/s: " + ", ".join(f"{k} {v / 1e12:.3f}" for k, v in peak.items()) + "\n")
    print(table(rows, cols))
    if "error" not in pr:
        print(f"\nsame process, paper_sn architecture at {base or 'paper size'}, fp32, median of {a.repeats} x {a.steps} steps:")
        print(table(ladder_table(pr), ["loop", "s/step", "vs reference", "vs row above"]))
    else: print(f"\nreference comparison failed: {pr['error']}")
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"train_{'gpu' if dev.type == 'cuda' else 'cpu'}{'_quick' if a.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": m, "peak_flops": peak, "rows": rows, "reference_vs_ours": pr,
                               "ladder_rows": ladder_table(pr) if "error" not in pr else [], "args": vars(a)}, indent=2) + "\n")
    print(f"\nwrote {out}")

def adam(a, dev):
    "One Adam step over both networks' parameters (random gradients), foreach against fused, alternating."
    from tof3dgan.core import get_preset
    from tof3dgan.networks import build_models
    rows = []
    for w in ((16,) if a.quick else (32, 512)):
        G, D = build_models(get_preset("paper_sn", width=w), dev)
        params = list(G.parameters()) + list(D.parameters())
        for p in params: p.grad = torch.randn_like(p)
        opts = {k: torch.optim.Adam(params, lr=1e-4, betas=(0.0, 0.9), **{k: True}) for k in ("foreach", "fused")}
        t = {k: [] for k in opts}
        for o in opts.values(): o.step()
        for _ in range(a.repeats):
            for k, o in opts.items():
                t0 = time.perf_counter()
                for _ in range(a.steps): o.step()
                if dev.type == "cuda": torch.cuda.synchronize()
                t[k].append((time.perf_counter() - t0) / a.steps)
        ms = {k: 1e3 * float(np.median(v)) for k, v in t.items()}
        rows.append({"width": w, "parameters (M)": f"{sum(p.numel() for p in params) / 1e6:.1f}", "foreach ms/step": f"{ms['foreach']:.1f}",
                     "fused ms/step": f"{ms['fused']:.1f}", "fused speed-up": f"{ms['foreach'] / ms['fused']:.2f}x"})
        del G, D, params, opts
    m = machine()
    print(f"machine: {m}\nAdam step over generator + critic (paper_sn), median of {a.repeats} rounds x {a.steps} steps:\n")
    print(table(rows, list(rows[0])))
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"adam_{dev.type}.json"
    out.write_text(json.dumps({"machine": m, "rows": rows, "args": vars(a)}, indent=2) + "\n")
    print(f"\nwrote {out}")

def paper_cpu(a, dev):
    "The ladder at the paper's patch size (128x128x64, batch 4, fp32 unless a row says bf16), widths 32 and 64."
    m, out_rows, res = machine(), [], {}
    widths, size = ((16,), {"patch": (32, 32, 16), "batch_size": 2}) if a.quick else ((32, 64), {})   # --quick: a smoke run
    for w in widths:
        spec = {"preset": "paper_sn", "overrides": {"width": w, "precision": "fp32", **size}, "device": str(dev),
                "steps": a.steps, "repeats": a.repeats}
        print(f"  ladder at width {w} ...", file=sys.stderr, flush=True)
        res[f"w{w}"] = pr = _run("--pair", spec)
        if "error" in pr: print(f"width {w}: failed: {pr['error']}"); continue
        out_rows += [{"width": w, **r} for r in ladder_table(pr)]
    print(f"machine: {m}, load average at the end {os.getloadavg()[0]:.2f}\n"
          f"paper_sn architecture, {'32x32x16, batch 2 (--quick)' if a.quick else '128x128x64, batch 4'}, fp32; median of {a.repeats} alternating rounds x {a.steps} steps:\n")
    print(table(out_rows, ["width", "loop", "s/step", "vs reference", "vs row above"]))
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"train_paper_cpu{'_quick' if a.quick else ''}.json"
    out.write_text(json.dumps({"machine": m, "load_average_end": os.getloadavg(), "ladder": res, "ladder_rows": out_rows,
                               "args": vars(a)}, indent=2) + "\n")
    print(f"\nwrote {out}")

if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker": worker(json.loads(sys.argv[2]))
    elif len(sys.argv) > 2 and sys.argv[1] == "--pair": pair(json.loads(sys.argv[2]))
    else: main()
