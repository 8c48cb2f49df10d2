"""Where one training step's time goes at the paper's patch size: torch.profiler over tof3dgan's fp32 step.

    python bench/profile_step.py                       # paper_sn, width 32, 128x128x64, batch 4, fp32, 2 profiled steps
    python bench/profile_step.py --width 64 --fast-path off --by-shape

Prints the top operators by self CPU time (share of the step) and writes bench/results/profile_<preset>_w<width>.json.
Never a test."""
import argparse, json, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch
sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine, table

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="paper_sn"); ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--patch", type=int, nargs=3, default=(128, 128, 64)); ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--fast-path", choices=("default", "off"), default="default",
                    help="default: the device's fast path (core.fast_path); off: contiguous, foreach Adam, two-layer upsample")
    ap.add_argument("--steps", type=int, default=2); ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--by-shape", action="store_true", help="also list the convolutions by input shape")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from tof3dgan.core import get_preset
    from tof3dgan.train import Trainer
    ov = dict(width=a.width, patch=tuple(a.patch), batch_size=a.batch_size, precision="fp32", snapshot_n=0)
    if a.fast_path == "off": ov.update(channels_last=False, fused_adam=False, fused_upsample=False)
    cfg = get_preset(a.preset, **ov)
    tr = Trainer(cfg, np.zeros((cfg.batch_size, 2, *cfg.patch), np.float32), Path(tempfile.mkdtemp()) / "r",
                 progress=False, tensorboard=False)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(cfg.batch_size, 2, *cfg.patch, generator=g) * 2 - 1
    noise = torch.Generator().manual_seed(0)
    tr.train_step(real, noise)                                   # warm-up
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=a.by_shape) as prof:
        for _ in range(a.steps): out = tr.train_step(real, noise)
        [v.item() for v in out.values()]
    wall = (time.perf_counter() - t0) / a.steps
    ev = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ev)
    rows = sorted(({"op": e.key, "self ms/step": e.self_cpu_time_total / 1e3 / a.steps, "calls/step": e.count / a.steps,
                    "share": e.self_cpu_time_total / total} for e in ev), key=lambda r: -r["self ms/step"])[:a.top]
    print(f"machine: {machine()}\n{cfg.name} width {cfg.width} patch {cfg.patch} batch {cfg.batch_size} fp32 "
          f"fast path {tr.fast}: {wall:.2f} s/step under the profiler\n")
    print(table([{**r, "self ms/step": f"{r['self ms/step']:.0f}", "calls/step": f"{r['calls/step']:.0f}",
                  "share": f"{100 * r['share']:.1f} %"} for r in rows], ["op", "self ms/step", "calls/step", "share"]))
    conv = []
    if a.by_shape:
        conv = sorted(({"op": e.key, "input shapes": str(e.input_shapes)[:90], "self ms/step": e.self_cpu_time_total / 1e3 / a.steps,
                        "share": e.self_cpu_time_total / total}
                       for e in prof.key_averages(group_by_input_shape=True) if any(k in e.key for k in ("conv", "batch_norm", "copy_"))),
                      key=lambda r: -r["self ms/step"])[:a.top]
        print("\nconvolutions and norms by input shape:")
        print(table([{**r, "self ms/step": f"{r['self ms/step']:.0f}", "share": f"{100 * r['share']:.1f} %"} for r in conv],
                    ["op", "input shapes", "self ms/step", "share"]))
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"profile_{cfg.name}_w{cfg.width}_{a.fast_path}.json"
    out.write_text(json.dumps({"machine": machine(), "config": cfg.to_dict(), "fast_path": tr.fast, "s_per_step": wall, "top": rows, "by_shape": conv}, indent=2) + "\n")
    print(f"\nwrote {out}")

if __name__ == "__main__":
    main()
