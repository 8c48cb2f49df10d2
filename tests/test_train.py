import math, os, signal, subprocess, sys, time
import numpy as np
import pytest
import torch
from torch import nn
from tof3dgan.core import TofError, get_preset
from tof3dgan.train import Trainer, gradient_penalty, interpolate
from tof3dgan.data.store import load_pairs
from tof3dgan.sampling import sample
from tof3dgan.checkpoint import load_checkpoint
from conftest import run_cli

class Linear(nn.Module):
    def __init__(self, w): super().__init__(); self.w = nn.Parameter(w)
    def forward(self, x): return (x * self.w).flatten(1).sum(1)

@pytest.mark.parametrize("n", [1, 4])
def test_penalty_on_linear_critic_is_norm_minus_one_squared(n):
    w = torch.randn(2, 6, 6, 4, dtype=torch.float64)
    x = torch.randn(n, 2, 6, 6, 4, dtype=torch.float64)
    assert gradient_penalty(Linear(w), x, "per_sample").item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-12)
    # the authors' whole-batch norm sees n copies of w
    assert gradient_penalty(Linear(w), x, "batch").item() == pytest.approx((w.norm().item() * math.sqrt(n) - 1) ** 2, rel=1e-12)

def test_penalty_with_grad_scaler_equals_unscaled():
    w = torch.randn(2, 4, 4, 2)
    x = torch.randn(3, 2, 4, 4, 2)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    assert gradient_penalty(Linear(w), x, scaler=scaler).item() == pytest.approx(gradient_penalty(Linear(w), x).item(), rel=1e-6)

def test_interpolate_eps_per_sample_and_per_batch():
    real, fake = torch.ones(5, 2, 2, 2, 2), torch.zeros(5, 2, 2, 2, 2)
    g = torch.Generator().manual_seed(0)
    per = interpolate(real, fake, "per_sample", g)
    eps = per.flatten(1)
    assert torch.all(eps == eps[:, :1]) and len(set(eps[:, 0].tolist())) == 5
    bat = interpolate(real, fake, "batch", g)
    assert len(set(bat.flatten().tolist())) == 1

@pytest.fixture(scope="module")
def pairs():
    return load_pairs("phantom", get_preset("quick"), progress=False)

def _weights(t):
    return {**{f"G.{k}": v for k, v in t.G.state_dict().items()}, **{f"D.{k}": v for k, v in t.D.state_dict().items()}}

def test_same_seed_bit_identical_weights(pairs, tmp_path):
    cfg = get_preset("quick", epochs=3)
    a = _weights(Trainer(cfg, pairs, tmp_path / "a", progress=False).fit())
    b = _weights(Trainer(cfg, pairs, tmp_path / "b", progress=False).fit())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = _weights(Trainer(get_preset("quick", epochs=3, seed=1), pairs, tmp_path / "c", progress=False).fit())
    assert not all(torch.equal(a[k], c[k]) for k in a)

def test_bf16_cpu_steps_stay_finite(pairs, tmp_path):
    t = Trainer(get_preset("quick", precision="bf16", epochs=2), pairs, tmp_path / "r", progress=False).fit()
    assert t.dtype == torch.bfloat16 and not t.scaler_d.is_enabled()
    assert all(np.isfinite([r["loss_d"], r["loss_g"], r["gp"]]).all() for r in t.history)
    assert all(torch.isfinite(p).all() for p in list(t.G.parameters()) + list(t.D.parameters()))
    assert t.skipped == {"critic": 0, "generator": 0}

def test_fp16_scaler_path_skips_and_counts_non_finite_steps(pairs, tmp_path):
    t = Trainer(get_preset("quick", precision="fp16", epochs=2), pairs, tmp_path / "r", progress=False).fit()
    assert t.scaler_d.is_enabled() and t.scaler_g.is_enabled()
    bad = sum(not np.isfinite(r["loss_d"]) for r in t.history)
    assert t.skipped["critic"] == bad and t.scaler_d.get_scale() == 65536.0 / 2 ** bad
    assert all(torch.isfinite(p).all() for p in t.D.parameters())
    ck = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert ck["scaler_d"]["scale"] == t.scaler_d.get_scale()

def test_non_finite_fp32_step_is_skipped(pairs, tmp_path):
    t = Trainer(get_preset("quick", epochs=1), pairs, tmp_path / "r", progress=False)
    before = {k: v.clone() for k, v in t.D.state_dict().items()}
    bad = torch.from_numpy(pairs[:2]).clone(); bad[0, 0, 0, 0, 0] = float("nan")
    t.train_step(bad, torch.Generator().manual_seed(0))
    assert t.skipped["critic"] == 1
    after = t.D.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "parametrizations" not in k or "original" in k)

def test_authors_options_gp_critic_penalty_through_g_batch_mode(tmp_path):
    cfg = get_preset("quick", epochs=1, gp_through_g=True, gp_mode="batch", critic_norm="instance", patch=(32, 32, 16), n_train=4)
    t = Trainer(cfg, load_pairs("phantom", cfg, progress=False), tmp_path / "r", progress=False).fit()
    assert all(np.isfinite(r["loss_d"]) for r in t.history)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in t.G.parameters())

def test_instance_critic_too_small_patch_is_a_clear_error():
    with pytest.raises(TofError, match="InstanceNorm critic"):
        get_preset("quick", critic_norm="instance")

def test_sampling_leaves_batchnorm_state_unchanged():
    from tof3dgan.networks import build_models
    g, _ = build_models(get_preset("quick"))
    before = {k: v.clone() for k, v in g.state_dict().items()}
    x_train = sample(g, torch.randn(4, 128), "train"); x_eval = sample(g, torch.randn(4, 128), "eval")
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
    assert x_train.shape == x_eval.shape == (4, 2, 16, 16, 8)

def test_log_csv_and_snapshots(quick_run):
    import pandas as pd
    df = pd.read_csv(quick_run / "log.csv")
    cfg = get_preset("quick")
    assert len(df) == cfg.epochs * cfg.n_train // cfg.batch_size
    assert {"loss_d", "loss_g", "wdist", "gp", "skipped_d", "skipped_g"} <= set(df.columns)
    assert sorted(p.name for p in (quick_run / "snapshots").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]

def test_resume_with_other_settings_is_refused(quick_run, pairs):
    with pytest.raises(TofError, match="other settings"):
        Trainer(get_preset("quick", width=32), pairs, quick_run, resume=True, progress=False)
    with pytest.raises(TofError, match="--resume"):
        Trainer(get_preset("quick"), pairs, quick_run, progress=False)

def test_kill_and_resume_equals_uninterrupted(tmp_path):
    args = ["--preset", "quick", "--epochs", "8", "--n-train", "96", "--quiet"]
    run_cli("train", *args, "--out", tmp_path / "full", check=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-c", "import sys; from tof3dgan.cli import main; sys.exit(main())",
                          "train", *args, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while not (killed / "log.csv").exists() and p.poll() is None and time.time() - t0 < 120: time.sleep(0.02)
    time.sleep(0.3)                                   # land somewhere inside a later epoch
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL, "training finished before it could be killed; make the run longer"
    done = load_checkpoint(killed / "checkpoint.pt")["epoch"]
    assert 1 <= done < 8
    r = run_cli("train", *args, "--out", killed, "--resume", check=True)
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(killed / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 8 and a["step"] == b["step"]
    for net in ("G", "D"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]
    assert strip(a["history"]) == strip(b["history"])          # the log continues exactly, no duplicated rows

def test_symmetric_label_encoding_end_to_end(pairs, tmp_path):
    import json
    from tof3dgan.generate import generate, to_volumes
    from tof3dgan.sampling import encode_label
    x = torch.from_numpy(pairs[:2])
    enc = encode_label(x, "symmetric")
    assert set(enc[:, 1].unique().tolist()) <= {-1.0, 1.0} and torch.equal(enc[:, 0], x[:, 0])
    assert encode_label(x, "paper") is x
    out = np.stack([np.zeros((2, 2, 2)), np.array([-0.5, -0.45, 0.0, 0.5] * 2).reshape(2, 2, 2)])
    assert to_volumes(out, 0.3, "symmetric")[1].ravel().tolist() == [0, 0, 1, 1] * 2          # (o + 1) / 2 > 0.3 <=> o > -0.4
    assert to_volumes(out, 0.3, "paper")[1].ravel().tolist() == [0, 0, 0, 1] * 2
    cfg = get_preset("quick", epochs=1, label_encoding="symmetric")
    Trainer(cfg, pairs, tmp_path / "r", progress=False).fit()
    g = generate(tmp_path / "r" / "checkpoint.pt", 2, tmp_path / "syn", progress=False)
    assert json.loads((g / "generation.json").read_text())["label_encoding"] == "symmetric"
