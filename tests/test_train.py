import math, os, signal, subprocess, sys
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

def test_penalty_under_fp16_autocast_with_grad_scaler_matches_fp32():
    "As in training: fp16 autocast, the GradScaler inside the penalty and on its backward; value and critic gradients match fp32."
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Conv3d(2, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv3d(8, 1, 3, padding=1), nn.Flatten(), nn.Linear(64, 1))
    x = torch.randn(3, 2, 4, 4, 4)
    def run(scaler=None, autocast=None):
        critic.zero_grad()
        gp = gradient_penalty(critic, x, scaler=scaler, autocast=autocast)
        (scaler.scale(gp) if scaler else gp).backward()
        s = scaler.get_scale() if scaler else 1.0
        return gp.item(), [p.grad / s for p in critic.parameters() if p.grad is not None]
    ref, g_ref = run()
    dtypes = []
    hook = critic[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    amp, g_amp = run(scaler, torch.autocast("cpu", dtype=torch.float16))
    hook.remove()
    assert dtypes == [torch.float16]                                        # the critic really ran under fp16 autocast
    assert amp == pytest.approx(ref, rel=1e-2) and len(g_amp) == len(g_ref)
    for a, b in zip(g_amp, g_ref): assert (a - b).abs().max() <= 2e-2 * b.abs().max()

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

def _trained(sd):  # the weights an optimiser changes (spectral norm's power-iteration vectors change in every forward)
    return {k: v.clone() for k, v in sd.items() if "parametrizations" not in k or "original" in k}

def test_fp16_scaler_path_skips_and_counts_non_finite_steps(pairs, tmp_path):
    t = Trainer(get_preset("quick", precision="fp16", epochs=2), pairs, tmp_path / "r", progress=False)
    assert t.scaler_d.is_enabled() and t.scaler_g.is_enabled()
    # a loss scale of 2^40 overflows the scaled penalty gradient in fp16 for certain: the critic step must be skipped
    t.scaler_d = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)
    before = _trained(t.D.state_dict())
    row = t.train_step(t._batch(np.arange(2)), torch.Generator().manual_seed(0))
    assert t.skipped == {"critic": 1, "generator": 0} and t.scaler_d.get_scale() == 2.0 ** 39
    assert not torch.isfinite(row["loss_d"])
    after = _trained(t.D.state_dict())
    assert all(torch.equal(before[k], after[k]) for k in before)                   # the skipped step changed nothing
    # a whole run at the default scale: every skip is counted, each halves the scale, the weights stay finite
    t = Trainer(get_preset("quick", precision="fp16", epochs=2), pairs, tmp_path / "r2", progress=False).fit()
    assert t.skipped["critic"] >= 1                                               # 65536 overflows the first step here
    assert all(r["scale_d"] == 65536.0 / 2 ** r["skipped_d"] for r in t.history)
    assert t.scaler_d.get_scale() == 65536.0 / 2 ** t.skipped["critic"]
    assert all(torch.isfinite(p).all() for p in t.D.parameters())
    ck = load_checkpoint(tmp_path / "r2" / "checkpoint.pt")
    assert ck["scaler_d"]["scale"] == t.scaler_d.get_scale()

def test_losses_have_the_papers_sign_and_make_up(pairs, tmp_path):
    "loss_d = D(G(z)) - D(x) + lambda * gp (eq. 1), loss_g = -D(G(z')) against the updated critic (eq. 2); each step descends."
    import copy
    cfg = get_preset("quick", epochs=1)
    t = Trainer(cfg, pairs, tmp_path / "r", progress=False)
    B, lam = cfg.batch_size, cfg.gp_lambda
    w0 = 0.05 * torch.randn(2, *cfg.patch, generator=torch.Generator().manual_seed(3))
    t.D = t.d_run = Linear(w0.clone())                                           # D(x) = <w, x>: every term known in closed form
    t.opt_d = torch.optim.Adam(t.D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    t.G.train(); g0 = copy.deepcopy(t.G)
    real = t._batch(np.arange(B))
    noise = torch.Generator().manual_seed(5)
    same = torch.Generator(); same.set_state(noise.get_state())                 # the step's draws: z, eps, then z'
    z1 = torch.randn(B, cfg.z_dim, generator=same); torch.rand((B, 1, 1, 1, 1), generator=same); z2 = torch.randn(B, cfg.z_dim, generator=same)
    row = t.train_step(real, noise)
    D = lambda x, w: (x * w).flatten(1).sum(1).mean()
    with torch.no_grad():
        fake1, fake2 = copy.deepcopy(g0)(z1), copy.deepcopy(g0)(z2)
    gp = (w0.norm() - 1) ** 2                                                    # per-sample penalty of a linear critic
    assert row["gp"].item() == pytest.approx(gp.item(), rel=1e-5)
    assert row["loss_d"].item() == pytest.approx((D(fake1, w0) - D(real, w0) + lam * gp).item(), rel=1e-5, abs=1e-6)
    assert row["wdist"].item() == pytest.approx((D(real, w0) - D(fake1, w0)).item(), rel=1e-5, abs=1e-6)
    # the critic's Adam step went down the gradient of loss_d
    grad = fake1.mean(0) - real.mean(0) + lam * 2 * (w0.norm() - 1) * w0 / w0.norm()
    w_ref = w0.clone().requires_grad_(True); w_ref.grad = grad.clone()
    torch.optim.Adam([w_ref], lr=cfg.lr_d, betas=cfg.betas).step()
    w1 = t.D.w.detach()
    assert torch.allclose(w1, w_ref.detach(), rtol=0, atol=1e-7) and not torch.equal(w1, w0)
    # loss_g scores a fresh fake with the updated critic; the generator's step lowers it
    assert row["loss_g"].item() == pytest.approx(-D(fake2, w1).item(), rel=1e-5, abs=1e-6)
    with torch.no_grad():
        after = -D(copy.deepcopy(t.G)(z2), w1).item()
        flipped = copy.deepcopy(g0)
        for p, p0, p1 in zip(flipped.parameters(), g0.parameters(), t.G.parameters()): p.copy_(2 * p0 - p1)
        against = -D(flipped(z2), w1).item()
    assert after < row["loss_g"].item() < against
    assert all(p.requires_grad for p in t.D.parameters())

def test_critic_stays_trainable_after_fit(pairs, tmp_path):
    t = Trainer(get_preset("quick", epochs=1), pairs, tmp_path / "r", progress=False).fit()
    assert all(p.requires_grad for p in t.D.parameters()) and all(p.requires_grad for p in t.G.parameters())

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

# `tof3dgan train` in a subprocess that SIGKILLs itself when the run has completed KILL_STEP steps (the global count, so
# also after a resume): the kill lands at the same point on a fast or a loaded machine
KILL_AT_STEP = """
import os, signal, sys
import tof3dgan.train as T
at, step = int(os.environ["KILL_STEP"]), T.Trainer.train_step
def train_step(self, *a, **k):
    if self.step == at: os.kill(os.getpid(), signal.SIGKILL)
    return step(self, *a, **k)
T.Trainer.train_step = train_step
from tof3dgan.cli import main
sys.exit(main())
"""

def test_kill_and_resume_equals_uninterrupted(tmp_path):
    args = ["--preset", "quick", "--epochs", "3", "--n-train", "32", "--quiet"]          # 16 steps per epoch
    run_cli("train", *args, "--out", tmp_path / "full", check=True)
    killed = tmp_path / "killed"
    p = subprocess.run([sys.executable, "-c", KILL_AT_STEP, "train", *args, "--out", str(killed)], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "KILL_STEP": "21"}, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]                             # killed inside epoch 2
    assert load_checkpoint(killed / "checkpoint.pt")["epoch"] == 1
    run_cli("train", *args, "--out", killed, "--resume", check=True)
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(killed / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"] == 48
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

def test_bf16_on_a_cpu_keeps_the_contiguous_format_and_warns_when_forced(pairs, tmp_path):
    t = Trainer(get_preset("quick", precision="bf16"), pairs, tmp_path / "a", progress=False, tensorboard=False)
    assert t.fast == {"channels_last": False, "fused_adam": True, "fused_upsample": True}
    with pytest.warns(UserWarning, match="channels_last with bf16 on a CPU"):
        Trainer(get_preset("quick", precision="bf16", channels_last=True), pairs, tmp_path / "b", progress=False, tensorboard=False)

def test_generator_weight_average_is_exact_resumes_and_is_what_is_shared(pairs, tmp_path):
    "g_ema: the average follows its formula step by step, leaves training unchanged, resumes exactly and is what export/generate use."
    from tof3dgan.checkpoint import export_generator, read_generator_file
    from tof3dgan.generate import load_generator
    cfg = get_preset("quick", epochs=2, g_ema=0.9)
    plain = Trainer(get_preset("quick", epochs=2), pairs, tmp_path / "plain", progress=False, tensorboard=False).fit()
    t = Trainer(cfg, pairs, tmp_path / "ema", progress=False, tensorboard=False)
    after = []                                                    # the generator's weights after every step
    step = t.train_step
    def record(*a):
        row = step(*a); after.append([p.detach().clone() for p in t.G.parameters()]); return row
    t.train_step = record
    t.fit()
    want = [p.detach().clone() for p in Trainer(cfg, pairs, tmp_path / "init", progress=False, tensorboard=False).G.parameters()]
    for s, w in enumerate(after):
        d = min(0.9, (1 + s) / (10 + s))
        want = [d * a + (1 - d) * b for a, b in zip(want, w)]
    assert len(after) == t.step == 2 * len(pairs) // cfg.batch_size
    for a, b in zip(t.G_ema.parameters(), want): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(plain.G.state_dict().values(), t.G.state_dict().values()))  # training unchanged
    # resumed after epoch 1: the same average
    Trainer(get_preset("quick", epochs=1, g_ema=0.9), pairs, tmp_path / "res", progress=False, tensorboard=False).fit()
    r = Trainer(cfg, pairs, tmp_path / "res", resume=True, progress=False, tensorboard=False).fit()
    assert all(torch.equal(a, b) for a, b in zip(r.G_ema.state_dict().values(), t.G_ema.state_dict().values()))
    # shared: export and generate take the average; --last-weights / average=False the last weights
    ck = tmp_path / "ema" / "checkpoint.pt"
    sd, _ = read_generator_file(export_generator(ck, tmp_path / "avg.safetensors"))
    assert all(torch.equal(sd[k], v) for k, v in t.G_ema.state_dict().items())
    g, _ = load_generator(ck, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), t.G_ema.state_dict().values()))
    g, _ = load_generator(ck, "cpu", average=False)
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), t.G.state_dict().values()))
    out = run_cli("export", "--checkpoint", ck, "--out", tmp_path / "last.safetensors", "--last-weights", check=True).stdout
    assert "(last weights)" in out
    sd, _ = read_generator_file(tmp_path / "last.safetensors")
    assert all(torch.equal(sd[k], v) for k, v in t.G.state_dict().items())
    assert "(weight average (g_ema))" in run_cli("export", "--checkpoint", ck, "--out", tmp_path / "a2.safetensors", check=True).stdout
