"""Benchmark of the evaluation metrics on this machine (a plain script, not a test).

    OMP_NUM_THREADS=1 python bench/bench_metrics.py [--patches 6] [--repeats 5]

1. DSC + bAVD (+ AVD) on a 448x448x128 mask pair: TubeTK Normal001 STAPLE vs nnU-Net (VesselVerse) from
   ../shared/data/real/vessel_masks when present, else a seeded synthetic pair of the same size and sparsity.
   Timed without reading the files; k-d tree (default) and EDT methods, in voxels and in mm.
   Then a dense whole-brain-sized pair (508x585x189, the same masks dilated and shifted: ~390k and ~550k voxels),
   timed for the default k-d tree over surface voxels against, in the same run, the previous tree over every voxel
   (the baseline) and the EDT.
2. MedicalNet ResNet-10 feature extraction (random init: speed does not depend on the weights) on 128x128x64
   patches: patches/s for the forward pass alone and for `extract_features` (authors' normalisation included).

Prints a table and writes bench/results/metrics_cpu.json with the machine named."""
import argparse, os, platform, statistics, sys, time
from pathlib import Path
import numpy as np
import torch
sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine
from tof3dgan.core import write_json
from tof3dgan.medicalnet import extract_features, medicalnet
from tof3dgan.metrics.seg import _bbox, seg_scores

ROOT = Path(__file__).resolve().parents[1]
MASKS = ROOT.parent / "shared" / "data" / "real" / "vessel_masks"

def machine_info() -> dict:
    "The shared machine description (bench/_machine.py) plus usable cores and the thread settings."
    return {**machine(), "usable_cores": len(os.sched_getaffinity(0)), "numpy": np.__version__, "load_average": os.getloadavg(),
            "python": platform.python_version(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}

def mask_pair(force_synthetic: bool = False):
    g, s = MASKS / "Normal001-MRA-STAPLE.nii.gz", MASKS / "Normal001-MRA-nnUNet.nii.gz"
    if g.exists() and s.exists() and not force_synthetic:
        import nibabel as nib
        G, S = (np.asanyarray(nib.load(str(p)).dataobj) > 0.5 for p in (g, s))
        return G, S, tuple(float(z) for z in nib.load(str(g)).header.get_zooms()[:3]), "Normal001 STAPLE vs nnUNet (real)"
    from scipy import ndimage
    rng = np.random.default_rng(0)
    f = ndimage.gaussian_filter(rng.random((448, 448, 128), dtype=np.float32), 2)
    G = f > np.quantile(f, 0.995)                                   # seeded blobs, 0.5% of the voxels (vessel-like sparsity)
    S = np.roll(G, 1, axis=0) & (rng.random(G.shape) < 0.9)         # shifted by a voxel, 10% dropped
    return G, S, (0.513, 0.513, 0.8), "seeded synthetic pair (blobs, 0.5% of voxels)"

def dense_pair(G, S):
    "A whole-brain-sized dense pair from a sparse one: dilate both (2 and 3 voxels), pad to 508x585x189, shift S by 2."
    from scipy import ndimage
    pad = [(max(0, (n - m) // 2), max(0, n - m - max(0, (n - m) // 2))) for n, m in zip((508, 585, 189), G.shape)]
    return (np.pad(ndimage.binary_dilation(G, iterations=2), pad),
            np.roll(np.pad(ndimage.binary_dilation(S, iterations=3), pad), 2, axis=0))

def _baseline_bavd(S, G):
    "The previous k-d tree method (tree over every voxel of the other set), for the in-run comparison."
    from scipy.spatial import cKDTree
    box = _bbox(G | S); Gb, Sb = G[box], S[box]
    ds = lambda A, B: float(cKDTree(np.argwhere(B).astype(float)).query(np.argwhere(A & ~B).astype(float))[0].sum())
    return (ds(Gb, Sb) + ds(Sb, Gb)) / (2 * int(G.sum()))

def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); out = fn(); ts.append(time.perf_counter() - t)
    return out, statistics.median(ts), min(ts)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=6, help="patches for the feature-extraction timing")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of the DSC/bAVD timing (median reported)")
    ap.add_argument("--synthetic-pair", action="store_true", help="use the seeded synthetic mask pair even if the real one exists")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "metrics_cpu.json"))
    a = ap.parse_args(argv)
    res = {"machine": machine_info(), "seg": {}, "features": {}}
    G, S, sp, src = mask_pair(a.synthetic_pair)
    res["seg"]["pair"], res["seg"]["shape"], res["seg"]["n_gt"], res["seg"]["n_pred"] = src, list(G.shape), int(G.sum()), int(S.sum())
    for method, reps in (("kdtree", a.repeats), ("edt", 1)):
        for unit, spacing in (("voxel", None), ("mm", sp)):
            s, med, best = timed(lambda: seg_scores(S, G, spacing, method=method), reps)
            res["seg"][f"{method}_{unit}"] = {"seconds_median": med, "seconds_min": best, "repeats": reps,
                                              "dsc": s.dsc, "bavd": s.bavd, "avd": s.avd}
    Gd, Sd = dense_pair(G, S)
    res["seg"]["dense"] = {"shape": list(Gd.shape), "n_gt": int(Gd.sum()), "n_pred": int(Sd.sum())}
    for name, fn, reps in (("surface k-d tree (default)", lambda: seg_scores(Sd, Gd).bavd, a.repeats),
                           ("all-voxel k-d tree (previous)", lambda: _baseline_bavd(Sd, Gd), a.repeats),
                           ("EDT", lambda: seg_scores(Sd, Gd, method="edt").bavd, 1)):
        v, med, best = timed(fn, reps)
        res["seg"]["dense"][name] = {"seconds_median": med, "seconds_min": best, "repeats": reps, "bavd": v}
    d = res["seg"]["dense"]
    assert abs(d["surface k-d tree (default)"]["bavd"] - d["all-voxel k-d tree (previous)"]["bavd"]) < 1e-9 * d["EDT"]["bavd"] + 1e-12
    d["speedup_vs_previous"] = d["all-voxel k-d tree (previous)"]["seconds_median"] / d["surface k-d tree (default)"]["seconds_median"]
    net = medicalnet(10, seed=0)
    rng = np.random.default_rng(0)
    imgs = np.clip(rng.normal(60, 40, (a.patches, 128, 128, 64)), 0, 255).astype(np.float32)
    imgs[imgs < 20] = 0
    x = torch.from_numpy(imgs[:1])[:, None]
    with torch.no_grad():
        net(x)                                                  # warm-up
        _, t_fwd, _ = timed(lambda: net(x), 3)
    t = time.perf_counter(); extract_features(imgs, net, "medicalnet", batch_size=2, progress=False); t_ext = time.perf_counter() - t
    res["features"] = {"network": "MedicalNet ResNet-10 (random init)", "patch": [128, 128, 64],
                       "forward_s_per_patch": t_fwd, "forward_patches_per_s": 1 / t_fwd,
                       "extract_features_patches": a.patches, "extract_features_batch_size": 2,
                       "extract_features_patches_per_s": a.patches / t_ext}
    m = res["machine"]
    print(f"machine: {m['cpu']}, {m['usable_cores']} usable of {m['cores']} cores, {m['memory_gib']} GiB, torch {m['torch']} "
          f"({m['threads']} thread(s)), numpy {m['numpy']}")
    print(f"mask pair: {src}, {tuple(G.shape)}, |G| = {res['seg']['n_gt']}, |S| = {res['seg']['n_pred']}")
    print(f"{'task':<44}{'time':>12}{'DSC':>8}{'bAVD':>9}{'AVD':>9}")
    for k in ("kdtree_voxel", "kdtree_mm", "edt_voxel", "edt_mm"):
        r = res["seg"][k]
        print(f"{'DSC+bAVD+AVD ' + k.replace('_', ', '):<44}{r['seconds_median']:>10.3f} s{r['dsc']:>8.4f}{r['bavd']:>9.4f}{r['avd']:>9.4f}")
    d = res["seg"]["dense"]
    print(f"dense pair {tuple(d['shape'])}, |G| = {d['n_gt']}, |S| = {d['n_pred']} (bAVD {d['EDT']['bavd']:.4f} voxels)")
    for k in ("surface k-d tree (default)", "all-voxel k-d tree (previous)", "EDT"):
        print(f"{'  DSC+bAVD, ' + k:<44}{d[k]['seconds_median']:>10.3f} s")
    print(f"{'  speed-up of the surface tree':<44}{d['speedup_vs_previous']:>10.2f} x")
    f = res["features"]
    print(f"{'ResNet-10 forward, 128x128x64, batch 1':<44}{f['forward_patches_per_s']:>8.2f} patches/s")
    print(f"{'extract_features (normalise + forward), b=2':<44}{f['extract_features_patches_per_s']:>8.2f} patches/s")
    write_json(res, a.out)
    print(f"wrote {a.out}")

if __name__ == "__main__":
    sys.exit(main())
