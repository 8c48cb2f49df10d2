import os, shutil, subprocess, sys
os.environ.setdefault("OMP_NUM_THREADS", "1")   # one thread per test worker: faster and deterministic on 2 cores
os.environ.setdefault("MPLBACKEND", "Agg")
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "real"

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
