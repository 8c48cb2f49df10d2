import os, shutil, subprocess, sys
os.environ.setdefault("OMP_NUM_THREADS", "1")   # one thread per test worker: faster and deterministic on 2 cores
os.environ.setdefault("MPLBACKEND", "Agg")
from pathlib import Path
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
from tof3dgan.core import REAL_DATA_HINT, real_data_dir
# real example data: $TOF3DGAN_REAL_DATA, else ../shared/data/real beside the repository; a path that never exists when absent
SHARED = real_data_dir() or Path(os.devnull) / "no-real-data"
REAL_SKIP = f"real data not found: {REAL_DATA_HINT}"     # the skip reason of tests that need it
AFF = np.diag([0.5, 0.5, 0.7, 1.0])     # the paper's spacing, RAS

# ---------------------------------------------------------------- shared fixtures: NIfTI files and tiny datasets
def write_nifti(path, arr, aff=AFF) -> Path:
    "Write `arr` as NIfTI at `path` (parent folders made); returns the path."
    import nibabel as nib
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr), aff), path)
    return path

def random_pairs(n: int, seed: int, shape=(16, 16, 8), shift: float = 0.0) -> np.ndarray:
    "Seeded pairs (n, 2, *shape) in the GAN's encoding: ~10% bright labelled voxels in noise (`shift` brightens all)."
    rng = np.random.default_rng(seed)
    lab = (rng.random((n, *shape)) < 0.1).astype(np.float32)
    img = np.clip(-0.8 + 1.4 * lab + 0.2 * rng.normal(size=lab.shape) + shift, -1, 1).astype(np.float32)
    return np.stack([img, lab], 1)

def write_pairs(pairs, root, prefix: str = "c") -> Path:
    "Pairs in the GAN's encoding -> an nnU-Net folder as `generate` writes it (uint8 images, binary labels)."
    from tof3dgan.patches import unit_to_u8
    root = Path(root)
    for i, p in enumerate(pairs):
        write_nifti(root / "imagesTr" / f"{prefix}{i:03d}_0000.nii.gz", unit_to_u8(p[0]))
        write_nifti(root / "labelsTr" / f"{prefix}{i:03d}.nii.gz", p[1].astype(np.uint8))
    return root

def tiny_dataset(root, n: int = 3, shape=(48, 56, 24), seed: int = 0, masks=None, crop_to=None) -> Path:
    "An nnU-Net raw dataset of `n` seeded phantom heads (and TOF-like images around real `masks`, if given)."
    from tof3dgan.data.store import example_dataset
    return example_dataset(root, masks, n_phantoms=n, shape=shape, crop_to=crop_to, seed=seed)

def run_cli(*args, timeout=300, env=None, check=False):
    "Run `tof3dgan ARGS` in a subprocess (one torch thread: deterministic and fast on 2 cores)."
    e = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    exe = shutil.which("tof3dgan")
    cmd = [exe, *map(str, args)] if exe else [sys.executable, "-c", "import sys; from tof3dgan.cli import main; sys.exit(main())", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)
    if check and r.returncode != 0: raise AssertionError(f"{args} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r

@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    "A finished training run at the quick preset (checkpoint.pt in the returned folder)."
    out = tmp_path_factory.mktemp("quick") / "run"
    run_cli("train", "--preset", "quick", "--out", out, "--quiet", check=True)
    return out


def assert_one_line_error(argv, tmp_path, capsys, expected: str, must_not_exist=("out",)):
    "Run the CLI in-process on a bad input: exit 2, one line `tof3dgan: error: ...` naming `expected`, nothing half-written."
    from tof3dgan import cli
    before = set(tmp_path.rglob("*"))
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("tof3dgan: error: ") and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    for name in must_not_exist: assert not (tmp_path / name).exists(), name
    assert not [p for p in set(tmp_path.rglob("*")) - before if ".partial-" in p.name or p.name.endswith(".tmp")]
