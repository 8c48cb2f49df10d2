"""Data benchmark: preparing one paper-sized case, and patch-store read speed against what the trainer consumes.

    python bench/bench_data.py            # writes bench/results/data_cpu.json and prints a table

Rows: seconds to prepare one 312x384x127 case (the default preprocessing in the authors' order: non-local-means denoise
for Rician noise, then N4, then skull strip; + 18+32 GAN and 250 U-Net patches of 128x128x64), and the same case with
the earlier order and denoiser (N4, then curvature flow) for comparison; store reads in patches/s (random batches of 4, float32 pairs as the trainer gets them);
the trainer's consumption measured in the same run at the `demo` preset (CPU) and, for the paper presets, the rate
the paper's TITAN RTX needed (Table 2: 100 epochs x 2,350 pairs in 77 h) and our H100 goal (SN-MP 100 epochs in 40 min)."""
import json, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch
sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine, table
from tof3dgan.core import get_preset
from tof3dgan.data.store import PatchSpec, PatchStore, PrepareConfig, example_dataset, prepare
from tof3dgan.train import Trainer

def read_rate(store, batch=4, seconds=5.0, seed=0):
    rng = np.random.default_rng(seed); n = 0; t0 = time.time()
    while time.time() - t0 < seconds:
        store[rng.choice(len(store), batch, replace=False)]; n += batch
    return n / (time.time() - t0)

def main():
    tmp = Path(tempfile.mkdtemp())
    src = example_dataset(tmp / "raw", n_phantoms=2, shape=(312, 384, 127), seed=0)
    t0 = time.time()
    idx = prepare(src, tmp / "store", PrepareConfig(spec=PatchSpec(), splits=(0.5, 0.5, 0.0)), progress=False)
    per_case = (time.time() - t0) / 2
    t0 = time.time()
    prepare(src, tmp / "store_old", PrepareConfig(spec=PatchSpec(), splits=(0.5, 0.5, 0.0), denoise="curvature_flow",
                                                  order=("n4", "denoise")), progress=False)
    per_case_old = (time.time() - t0) / 2
    rows = [{"what": "prepare one 312x384x127 case (NLM denoise, N4, mask, 50 + 250 patches)", "value": f"{per_case:.1f}", "unit": "s/case"},
            {"what": "prepare one 312x384x127 case, earlier order (N4, curvature flow, mask, patches)", "value": f"{per_case_old:.1f}", "unit": "s/case"}]
    paper = PatchStore(tmp / "store", "gan_train")
    r_paper = read_rate(paper)
    rows.append({"what": "store read, 128x128x64 pairs (float32, batch 4)", "value": f"{r_paper:.0f}", "unit": "patches/s"})
    r_raw = read_rate(type("U8", (), {"__len__": lambda s: len(paper), "__getitem__": lambda s, i: paper.uint8(i)})())
    rows.append({"what": "store read, 128x128x64 pairs (uint8 as the trainer moves them, batch 4)", "value": f"{r_raw:.0f}", "unit": "patches/s"})
    demo_cfg = get_preset("demo", epochs=1, snapshot_n=0)
    idx2 = prepare(src, tmp / "store_demo", PrepareConfig(spec=PatchSpec(patch=demo_cfg.patch, n_random=100, n_seg=4), spacing=None,
                                                           n4=False, denoise="none", splits=(0.5, 0.5, 0.0)), progress=False)
    demo = PatchStore(tmp / "store_demo", "gan_train")
    r_demo = read_rate(demo, batch=demo_cfg.batch_size)
    rows.append({"what": "store read, 32x32x16 pairs (float32, batch 8)", "value": f"{r_demo:.0f}", "unit": "patches/s"})
    tr = Trainer(demo_cfg, demo, tmp / "run", progress=False, tensorboard=False)
    noise = torch.Generator().manual_seed(0)
    batch = torch.from_numpy(demo[np.arange(demo_cfg.batch_size)])
    tr.train_step(batch, noise)
    t0 = time.time(); k = 20
    for _ in range(k): tr.train_step(batch, noise)
    need_demo = k * demo_cfg.batch_size / (time.time() - t0)
    need_titan = 100 * 2350 / (77 * 3600)
    need_h100 = 100 * 2350 / (40 * 60)
    rows += [{"what": "trainer consumes, demo preset on this CPU (measured)", "value": f"{need_demo:.1f}", "unit": "patches/s"},
             {"what": "trainer consumes, paper SN-MP on TITAN RTX (paper Table 2)", "value": f"{need_titan:.2f}", "unit": "patches/s"},
             {"what": "trainer consumes, paper SN-MP at our H100 goal (40 min/100 ep)", "value": f"{need_h100:.0f}", "unit": "patches/s"},
             {"what": "store / demo trainer", "value": f"{r_demo / need_demo:.0f}x", "unit": "ratio"},
             {"what": "store / paper trainer (TITAN RTX)", "value": f"{r_paper / need_titan:.0f}x", "unit": "ratio"},
             {"what": "store / paper trainer (H100 goal), float32 reads", "value": f"{r_paper / need_h100:.1f}x", "unit": "ratio"},
             {"what": "store / paper trainer (H100 goal), uint8 reads", "value": f"{r_raw / need_h100:.1f}x", "unit": "ratio"}]
    m = machine()
    print(f"machine: {m}\n")
    print(table(rows, ["what", "value", "unit"]))
    out = Path(__file__).parent / "results" / "data_cpu.json"
    out.write_text(json.dumps({"machine": m, "rows": rows, "prepare_seconds_total": idx["seconds"]}, indent=2) + "\n")
    print(f"\nwrote {out}")

if __name__ == "__main__":
    main()
