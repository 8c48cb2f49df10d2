"Multi-process training (torchrun + DDP) on the CPU with gloo: same result as one process at the same global batch."
import json, os, subprocess, sys, textwrap
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

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

def _torchrun_script(code, tmp_path, timeout=300):
    "Run `code` in two gloo processes (torchrun); returns the completed process (a hang fails by timeout)."
    f = tmp_path / "script.py"; f.write_text(textwrap.dedent(code))
    return subprocess.run([*TORCHRUN, str(f)], capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})

def test_snapshot_sampling_with_sync_batchnorm_needs_no_other_process(tmp_path):
    "Issue 11.17: rank 0 samples a SyncBatchNorm generator alone (the per-epoch snapshot); no collective may start."
    r = _torchrun_script("""
        import copy, torch, torch.distributed as dist
        from torch import nn
        from tof3dgan.core import get_preset
        from tof3dgan.networks import build_models
        from tof3dgan.sampling import sample
        dist.init_process_group("gloo")
        plain = build_models(get_preset("quick"))[0]
        g = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain))
        real = {n: getattr(dist, n) for n in ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "barrier")}
        def refuse(*a, **k): raise AssertionError("sampling started a collective")
        if dist.get_rank() == 0:
            for n in real: setattr(dist, n, refuse)
            z = torch.randn(2, 128, generator=torch.Generator().manual_seed(0))
            x = sample(g, z, "train")
            for n, f in real.items(): setattr(dist, n, f)
            assert torch.equal(x, sample(plain, z, "train")), "SyncBatchNorm sampling differs from BatchNorm"
            print("sampled alone", tuple(x.shape))
        dist.barrier(); dist.destroy_process_group()
    """, tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "sampled alone (2, 2, 16, 16, 8)" in r.stdout

def test_batch_penalty_takes_its_norm_over_the_global_batch(tmp_path):
    "Issue 11.16: two DDP processes with half the batch each give the critic loss's penalty and gradients of one process."
    r = _torchrun_script("""
        import torch, torch.distributed as dist
        from torch import nn
        from torch.nn.parallel import DistributedDataParallel as DDP
        from tof3dgan.train import gradient_penalty
        dist.init_process_group("gloo"); rank = dist.get_rank()
        def critic():
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 64, 1)).double()
        x, f = (torch.randn(4, 2, 4, 4, 4, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (1, 2))
        def loss_d(d, x, f, **kw):       # the trainer's critic loss (eq. 1) with the whole-batch penalty
            gp = gradient_penalty(d, 0.3 * x + 0.7 * f, "batch", **kw)
            (d(f).mean() - d(x).mean() + 10 * gp).backward()
            return gp, [p.grad for p in (d.module if isinstance(d, DDP) else d).parameters()]
        gp1, g1 = loss_d(critic(), x, f)                                          # one process, whole batch
        sl = slice(2 * rank, 2 * rank + 2)
        d2 = DDP(critic())
        gp2, g2 = loss_d(d2, x[sl], f[sl], global_batch=True)                      # two processes, half each
        assert torch.allclose(gp1, gp2, rtol=1e-10), (gp1.item(), gp2.item())
        assert all((a is None) == (b is None) for a, b in zip(g1, g2))
        err = max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(g1, g2) if a is not None)
        assert err < 1e-9, err
        d3 = DDP(critic())
        gp3, g3 = loss_d(d3, x[sl], f[sl])                                          # the local share's norm is another penalty
        assert not torch.allclose(gp3, gp1)
        print(f"rank {rank}: penalty {gp2.item():.6f} == {gp1.item():.6f}, gradients within {err:.1e}")
        # Both ranks are done once they pass the barrier; leave without running C++ destructors. Tearing down gloo
        # after DDP's double-backward reducers (destroy_process_group or plain interpreter exit) aborted one rank with
        # "terminate called without an active exception" in about one run of four on the 2-core CI machine, after
        # every check above had passed. The trainer is not affected: its DDP runs end in the test above.
        import os, sys
        dist.barrier(); sys.stdout.flush(); sys.stderr.flush(); os._exit(0)
    """, tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.count("penalty") == 2

def test_one_sample_per_process_with_batchnorm_on_cpu_is_refused(tmp_path):
    "Issue 11.16: on CPUs (no SyncBatchNorm) a per-process share of one sample would change the generator's BatchNorm."
    r = subprocess.run([*TORCHRUN, "-m", "tof3dgan", "train", "--preset", "quick", "--batch-size", "2", "--out", str(tmp_path / "x"), "--quiet"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, cwd=tmp_path)
    assert r.returncode != 0
    assert "--batch-size 2 over 2 processes leaves one sample per process" in r.stderr and "--batch-size 4" in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "x" / "checkpoint.pt").exists()

@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (NCCL, SyncBatchNorm)")
def test_gpus_use_sync_batchnorm_by_default_and_finish(tmp_path):
    "Issues 11.16/17 on GPUs: SyncBatchNorm without --sync-bn, and the rank-0 snapshot does not hang at the end of an epoch."
    r = subprocess.run([*TORCHRUN, "-m", "tof3dgan", "train", "--preset", "quick", "--batch-size", "2", "--epochs", "2",
                        "--out", str(tmp_path / "g"), "--quiet"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    assert json.loads((tmp_path / "g" / "run.json").read_text())["sync_bn"] is True
    assert sorted(p.name for p in (tmp_path / "g" / "snapshots").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
