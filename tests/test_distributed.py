"Multi-process training (torchrun + DDP) on the CPU with gloo: same result as one process at the same global batch."
import os, subprocess, sys
import pytest
import torch
from tof3dgan.checkpoint import load_checkpoint

ARGS = ["train", "--preset", "quick", "--g-norm", "group", "--batch-size", "4", "--n-train", "16", "--epochs", "2", "--quiet"]

def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r

def test_two_gloo_processes_match_one(tmp_path):
    _run([sys.executable, "-m", "tof3dgan", *ARGS, "--out", str(tmp_path / "one")], tmp_path)
    _run([sys.executable, "-m", "tof3dgan", *ARGS, "--seed", "1", "--out", str(tmp_path / "seed1")], tmp_path)
    r = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "tof3dgan",
              *ARGS, "--out", str(tmp_path / "two")], tmp_path)
    assert r.stdout.count("Trained quick") == 1                                # only rank 0 reports
    a, b, c = (load_checkpoint(tmp_path / n / "checkpoint.pt") for n in ("one", "two", "seed1"))
    assert a["step"] == b["step"] == 8
    # the logged losses (averaged over the processes) follow the single-process run step by step
    for ra, rb in zip(a["history"], b["history"]):
        assert abs(ra["loss_d"] - rb["loss_d"]) < 1e-3 and abs(ra["wdist"] - rb["wdist"]) < 1e-3
    # weights agree up to float reduction order (Adam turns tiny gradient differences into at most ~lr-sized steps):
    # far closer than a run with another seed
    mean_diff = lambda x, y, net: sum((x[net][k].float() - y[net][k].float()).abs().sum().item() for k in x[net]) / sum(v.numel() for v in x[net].values())
    for net in ("G", "D"):
        assert mean_diff(a, b, net) < 0.01 * mean_diff(a, c, net), net
        assert max((a[net][k].float() - b[net][k].float()).abs().max().item() for k in a[net]) < 8 * 2e-4 * 2   # 8 steps x lr bound
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())

def test_sync_bn_on_cpu_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tof3dgan", "train", "--preset", "quick", "--sync-bn", "--out", str(tmp_path / "x"), "--quiet"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "needs CUDA" in r.stderr
