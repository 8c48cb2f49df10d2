"""Data benchmark: preparing one paper-sized case, the patch store's size on disk, and its read speed against what the trainer consumes.

    python bench/bench_data.py            # writes bench/results/data_cpu.json and prints a table

Rows: seconds to prepare one 312x384x127 case (the default preprocessing in the authors' order: non-local-means denoise
for Rician noise, then N4, then skull strip; + 18+32 GAN and 250 U-Net patches of 128x128x64), and the same case with
the earlier order and denoiser (N4, then curvature flow) for comparison; the store's patch data on disk (format 2: each
case's preprocessed volume once as uint16 codes + uint8 labels, and the patch origins) against the format-1 layout that
wrote every patch out as uint8 (+ bit-packed label), computed from the number of patches x bytes per patch, and that
layout at 16 bits; store reads in patches/s (random batches of 4): float32 pairs as `store[idx]` gives them and the
16-bit codes + uint8 labels that the trainer moves to its device (`store.raw`), and, measured in the same run on a
format-1 copy of the GAN set written here, the old uint8 layout's reads; the trainer's consumption measured in the same
run at the `demo` preset (CPU) and, for the paper presets, the rate the paper's TITAN RTX needed (Table 2: 100 epochs x
2,350 pairs in 77 h) and our H100 goal (SN-MP 100 epochs in 40 min)."""
import json, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch
sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine, table
from tof3dgan.core import get_preset
from tof3dgan.data.store import PatchSpec, PatchStore, PrepareConfig, example_dataset, prepare, to_pairs
from tof3dgan.train import Trainer

def read_rate(read, n, batch=4, seconds=5.0, seed=0):
    "Patches/s of `read(idx)` over random batches of `batch` of `n` patches."
    rng = np.random.default_rng(seed); k = 0; t0 = time.time()
    while time.time() - t0 < seconds:
        read(rng.choice(n, batch, replace=False)); k += batch
    return k / (time.time() - t0)

def store_bytes(root: Path) -> int:
    "Bytes of a store's patch data: the sets' files and the per-case volumes (not volumes/, index.json, run.json)."
    files = [p for p in root.glob("*.json") if p.name not in ("index.json", "run.json")] + list((root / "cases").glob("*.npy"))
    return sum(p.stat().st_size for p in files)

def old_layout_bytes(idx: dict, img_bytes: int = 1) -> int:
    "Bytes the format-1 layout takes for the same sets: each patch's image (`img_bytes` a voxel) and bit-packed label."
    return sum(s["n"] * (int(np.prod(s["patch"])) * img_bytes + (int(np.prod(s["patch"])) + 7) // 8) for s in idx["stores"].values())

class OldLayout:
    "The format-1 GAN set (uint8 patches + bit-packed labels, memory-mapped), written from a store to time its reads."
    def __init__(self, store: PatchStore, folder: Path):
        n, self.patch, self.vox = len(store), store.patch, int(np.prod(store.patch))
        img = np.lib.format.open_memmap(folder / "old.img.npy", "w+", np.uint8, (n, *self.patch))
        lab = np.lib.format.open_memmap(folder / "old.lab.npy", "w+", np.uint8, (n, (self.vox + 7) // 8))
        for i in range(n):
            u = store.uint8(i); img[i] = u[0]; lab[i] = np.packbits(u[1].astype(bool).ravel())
        img.flush(); lab.flush(); del img, lab
        self.img, self.lab = np.load(folder / "old.img.npy", mmap_mode="r"), np.load(folder / "old.lab.npy", mmap_mode="r")

    def uint8(self, idx):                                   # the format-1 PatchStore.uint8, verbatim
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), 2, *self.patch), np.uint8)
        out[order, 0] = self.img[idx[order]]
        out[order, 1] = np.unpackbits(self.lab[idx[order]], axis=1, count=self.vox).reshape(len(idx), *self.patch)
        return out

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
    shapes = "; ".join(f"{n} {'x'.join(map(str, c['shape']))}" for n, c in idx["cases"].items())
    sets = ", ".join(f"{k} {v['n']}" for k, v in idx["stores"].items())
    new_b, old_b, old16_b = store_bytes(tmp / "store"), old_layout_bytes(idx), old_layout_bytes(idx, 2)
    mib = lambda b: f"{b / 2**20:.0f}"
    rows += [{"what": f"store patch data, format 1: uint8 patches one by one (computed: patches x bytes/patch; {sets} patches of 128x128x64)",
              "value": mib(old_b), "unit": "MiB"},
             {"what": "store patch data, format 1 at 16 bits (computed: uint16 patches one by one)", "value": mib(old16_b), "unit": "MiB"},
             {"what": f"store patch data, format 2: one uint16 + uint8 volume per case, origins (measured on disk; {shapes})",
              "value": mib(new_b), "unit": "MiB"},
             {"what": "store patch data, format 1 (8 bit) / format 2 (16 bit)", "value": f"{old_b / new_b:.1f}x", "unit": "ratio"}]
    paper = PatchStore(tmp / "store", "gan_train")
    old = OldLayout(paper, tmp)
    r_paper = read_rate(paper.__getitem__, len(paper))
    r_raw = read_rate(paper.raw, len(paper))
    r_old = read_rate(lambda i: to_pairs(old.uint8(i)), len(paper))
    r_old_u8 = read_rate(old.uint8, len(paper))
    rows += [{"what": "store read, 128x128x64 pairs (float32 from 16 bit, batch 4)", "value": f"{r_paper:.0f}", "unit": "patches/s"},
             {"what": "store read, 128x128x64 (uint16 codes + uint8 labels as the trainer moves them, batch 4)", "value": f"{r_raw:.0f}", "unit": "patches/s"},
             {"what": "format 1 (same run): 128x128x64 pairs (float32 from uint8, batch 4)", "value": f"{r_old:.0f}", "unit": "patches/s"},
             {"what": "format 1 (same run): 128x128x64 (uint8 as the trainer moved them, batch 4)", "value": f"{r_old_u8:.0f}", "unit": "patches/s"}]
    demo_cfg = get_preset("demo", epochs=1, snapshot_n=0)
    prepare(src, tmp / "store_demo", PrepareConfig(spec=PatchSpec(patch=demo_cfg.patch, n_random=100, n_seg=4), spacing=None,
                                                   n4=False, denoise="none", splits=(0.5, 0.5, 0.0)), progress=False)
    demo = PatchStore(tmp / "store_demo", "gan_train")
    r_demo = read_rate(demo.__getitem__, len(demo), batch=demo_cfg.batch_size)
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
             {"what": "store / paper trainer (H100 goal), 16-bit reads (the trainer's path)", "value": f"{r_raw / need_h100:.1f}x", "unit": "ratio"},
             {"what": "format 1 / paper trainer (H100 goal), float32 | uint8 reads (same run)", "value": f"{r_old / need_h100:.1f}x | {r_old_u8 / need_h100:.1f}x", "unit": "ratio"}]
    m = machine()
    print(f"machine: {m}\n")
    print(table(rows, ["what", "value", "unit"]))
    out = Path(__file__).parent / "results" / "data_cpu.json"
    out.write_text(json.dumps({"machine": m, "rows": rows, "prepare_seconds_total": idx["seconds"],
                               "store_bytes": {"format_1_uint8_computed": old_b, "format_1_uint16_computed": old16_b, "format_2_measured": new_b},
                               "stores": idx["stores"], "case_shapes": {n: c["shape"] for n, c in idx["cases"].items()}}, indent=2) + "\n")
    print(f"\nwrote {out}")

if __name__ == "__main__":
    main()
