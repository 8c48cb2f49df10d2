"Differential privacy and the privacy audit: epsilon against opacus and an independent RDP computation, per-sample gradients and clipping, refusals, resume, and the audit's verdict on a memorising and an independent generator."
import json, math, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn
from conftest import random_pairs, run_cli
from tof3dgan.core import TofError, get_preset
from tof3dgan.networks import Critic, param_counts
from tof3dgan.privacy.dp import (DPConfig, DPTrainer, check_private_critic, clip_per_sample, epsilon, noise_for_epsilon,
                                 per_sample_grads, privatise, sample_rate)
from tof3dgan.privacy.audit import audit, auc_ci, load_source, real_pairs, real_rows

def _cfg(**kw):
    "The dp preset at CPU-test size: width 16, 16x16x8 patches, batch 4, one epoch over 16 pairs."
    return get_preset("dp", **{"width": 16, "patch": (16, 16, 8), "batch_size": 4, "epochs": 1, "n_train": 16,
                               "phantom_shape": (48, 56, 24), "snapshot_n": 0, **kw})

PAIRS = random_pairs(16, seed=0)

# ---------------------------------------------------------------- the preset
def test_dp_preset_is_the_papers_model():
    c = get_preset("dp")
    assert (c.width, c.g_norm, c.critic_norm, c.n_critic, c.lr_d, c.lr_g, c.gp_lambda, c.betas) == \
           (256, "group", "none", 5, 1e-4, 1e-4, 0.0, (0.0, 0.9))
    assert param_counts(c) == {"generator": 68_797_282, "critic": 1_228_961, "total": 70_026_243}   # reference.md section 1

# ---------------------------------------------------------------- accounting
def _rdp_sgm_integer(q, sigma, alpha):
    "RDP of the Poisson-sampled Gaussian mechanism at integer order alpha (Mironov, Talwar, Zhang 2019, eq. for integer alpha)."
    terms = [math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1) + (alpha - k) * math.log1p(-q)
             + (k * math.log(q) if k else 0.0) + (k * k - k) / (2 * sigma ** 2) for k in range(alpha + 1)]
    mx = max(terms)
    return (mx + math.log(sum(math.exp(t - mx) for t in terms))) / (alpha - 1)

def _eps_independent(q, sigma, steps, delta, orders=range(2, 64)):
    "Epsilon from integer-order RDP with the conversion of Balle et al. 2020 (Thm 21), written out independently of opacus."
    return min(steps * _rdp_sgm_integer(q, sigma, a) - (math.log(delta) + math.log(a)) / (a - 1) + math.log((a - 1) / a)
               for a in orders)

@pytest.mark.parametrize("q, sigma, steps, delta", [
    (4 / 2350, 0.5, 293_750, 1 / 2350),      # the paper's setting, one private step per critic update
    (4 / 2350, 0.3, 587_500, 1 / 2350),      # ... and the authors' two private steps per update
    (0.01, 1.1, 6_000, 1e-5),                # Abadi et al.'s MNIST regime
    (0.25, 2.0, 40, 1 / 16),                 # a tiny CPU-test run
])
def test_epsilon_matches_opacus_and_an_independent_rdp_computation(q, sigma, steps, delta):
    from opacus.accountants import RDPAccountant
    acc = RDPAccountant(); acc.history = [(sigma, q, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert epsilon([(sigma, q, steps)], delta) == pytest.approx(acc.get_epsilon(delta), rel=1e-12)
        ints = list(range(2, 64))
        assert acc.get_epsilon(delta, alphas=ints) == pytest.approx(_eps_independent(q, sigma, steps, delta), rel=1e-9)

def test_papers_epsilons_are_reproduced_by_the_authors_step_count():
    "Paper: sigma 0.1 / 0.3 / 0.5 -> epsilon ~1e6 / 1e3 / 1e2 (N 2,350, batch 4, 100 epochs, 5 critic updates x 2 private steps)."
    q, steps = 4 / 2350, 100 * (2350 // 4) * 5 * 2
    assert [round(math.log10(epsilon([(s, q, steps)], 1 / 2350))) for s in (0.1, 0.3, 0.5)] == [6, 3, 2]

def test_target_epsilon_picks_the_noise_for_the_planned_steps():
    s = noise_for_epsilon(8.0, 1e-5, 0.01, 5_000)
    assert 7.9 <= epsilon([(s, 0.01, 5_000)], 1e-5) <= 8.0
    assert epsilon([(s * 0.9, 0.01, 5_000)], 1e-5) > 8.0               # less noise would overspend

@pytest.mark.parametrize("engine", ["opacus", "func"])
def test_trainer_epsilon_equals_opacus_for_its_q_sigma_and_steps(tmp_path, engine):
    tr = DPTrainer(_cfg(), PAIRS, tmp_path / "run", DPConfig(noise_multiplier=0.7, engine=engine), device="cpu", progress=False).fit()
    q, steps = sample_rate(16, 4), 1 * (16 // 4) * 5
    assert tr.accountant.history == [(0.7, q, steps)]
    from opacus.accountants import RDPAccountant
    ref = RDPAccountant(); ref.history = [(0.7, q, steps)]
    assert tr.spent() == pytest.approx(ref.get_epsilon(1 / 16), rel=1e-12)
    if engine == "opacus": assert tr.spent() == pytest.approx(tr.engine.get_epsilon(1 / 16), rel=1e-12)   # PrivacyEngine's own
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["privacy"]["epsilon"] == pytest.approx(tr.spent()) and run["privacy"]["private_steps"] == steps
    assert run["privacy"]["delta"] == 1 / 16 and run["privacy"]["unit"].startswith("one training patch-label pair")

def test_target_epsilon_run_spends_at_most_the_target(tmp_path):
    tr = DPTrainer(_cfg(), PAIRS, tmp_path / "run", DPConfig(noise_multiplier=None, target_epsilon=40.0, engine="func"),
                   device="cpu", progress=False).fit()
    assert 39.0 <= tr.spent() <= 40.0

# ---------------------------------------------------------------- per-sample gradients and clipping
def _loop_grads(critic, real, fake, lam, eps):
    "The per-pair gradient computed one pair at a time with ordinary autograd (create_graph for the penalty)."
    rows = []
    for i in range(len(real)):
        loss = critic(fake[i:i + 1])[0] - critic(real[i:i + 1])[0]
        if lam:
            xh = (eps[i] * real[i] + (1 - eps[i]) * fake[i])[None].requires_grad_(True)
            (g,) = torch.autograd.grad(critic(xh).sum(), xh, create_graph=True)
            loss = loss + lam * (torch.sqrt((g ** 2).sum() + 1e-12) - 1) ** 2
        rows.append(torch.autograd.grad(loss, list(critic.parameters())))
    return {n: torch.stack([r[k] for r in rows]) for k, (n, _) in enumerate(critic.named_parameters())}

@pytest.mark.parametrize("norm, patch, lam", [("none", (16, 16, 8), 0.0), ("none", (16, 16, 8), 10.0), ("instance", (32, 32, 16), 10.0)])
def test_per_sample_gradients_equal_a_per_sample_loop(norm, patch, lam):
    torch.manual_seed(0)
    d = Critic(16, patch, 2, norm)
    real, fake, eps = torch.randn(5, 2, *patch), torch.randn(5, 2, *patch), torch.rand(5)
    got, (dr, df, gp) = per_sample_grads(d, real, fake, lam, eps)
    ref = _loop_grads(d, real, fake, lam, eps)
    scale = max(v.abs().max() for v in ref.values())
    for n in ref: torch.testing.assert_close(got[n], ref[n], atol=1e-5 * scale, rtol=1e-4)
    torch.testing.assert_close(df - dr, torch.stack([d(fake[i:i + 1])[0] - d(real[i:i + 1])[0] for i in range(5)]).detach(),
                               atol=1e-6, rtol=1e-5)
    assert (gp > 0).all() if lam else (gp == 0).all()

def test_clipping_bounds_every_per_sample_gradient_norm():
    torch.manual_seed(1)
    d = Critic(16, (16, 16, 8), 2, "none")
    g, _ = per_sample_grads(d, torch.randn(8, 2, 16, 16, 8), torch.randn(8, 2, 16, 16, 8), 10.0, torch.rand(8))
    _, before = clip_per_sample(g, 1.0)
    for C in (float(before.min()) / 2, float(before.median()), float(before.max()) * 2):
        clipped, _ = clip_per_sample(g, C)
        after = torch.stack([v.flatten(1).norm(dim=1) for v in clipped.values()], 1).norm(dim=1)
        assert (after <= C * (1 + 1e-6)).all()
        torch.testing.assert_close(after, torch.minimum(before, torch.tensor(C)), rtol=1e-4, atol=0)   # rows below C untouched

def _row_grads(critic, x, sign):
    "Gradient of sign * D(x_i) for each row i, one row at a time with ordinary autograd."
    rows = [torch.autograd.grad(sign * critic(x[i:i + 1])[0], list(critic.parameters())) for i in range(len(x))]
    return {n: torch.stack([r[k] for r in rows]) for k, (n, _) in enumerate(critic.named_parameters())}

def test_opacus_engine_clips_each_real_and_fake_row_of_the_one_private_step():
    "The opacus engine's step: rows -D(real_i) and +D(fake_j) in one backward, each clipped to C, summed, / expected batch."
    from opacus import PrivacyEngine
    torch.manual_seed(2)
    d = Critic(16, (16, 16, 8), 2, "none")
    real, fake = torch.randn(3, 2, 16, 16, 8), torch.randn(4, 2, 16, 16, 8)
    ref_r, ref_f = _row_grads(d, real, -1.0), _row_grads(d, fake, 1.0)
    _, n0 = clip_per_sample({n: torch.cat([ref_r[n], ref_f[n]]) for n in ref_r}, 1.0)
    C = float(n0.median())                                              # some rows above the bound, some below
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pe = PrivacyEngine(accountant="rdp")
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(16, 1)), batch_size=4)
        m, opt, _ = pe.make_private(module=d, optimizer=torch.optim.SGD(d.parameters(), lr=0.0), data_loader=loader,
                                    noise_multiplier=0.0, max_grad_norm=C)
    s = m(torch.cat([real, fake])); sign = torch.cat([-torch.ones(3), torch.ones(4)])
    (sign * s).mean().backward()                                        # what DPTrainer.critic_step does
    for n, p in d.named_parameters():
        torch.testing.assert_close(p.grad_sample, torch.cat([ref_r[n], ref_f[n]]), atol=1e-6, rtol=1e-4)
    opt.pre_step()                                                      # clip, sum, (zero) noise, / expected batch
    clipped, norms = clip_per_sample({n: p.grad_sample for n, p in d.named_parameters()}, C)
    assert (norms > C).any() and (norms < C).any()
    for n, p in d.named_parameters(): torch.testing.assert_close(p.grad, clipped[n].sum(0) / 4, atol=1e-8, rtol=1e-4)

def test_privatise_adds_noise_of_sigma_c_over_the_expected_batch():
    g = {"w": torch.zeros(3, 200_000)}
    out = privatise(g, max_norm=2.0, noise_multiplier=0.5, expected_batch=4, generator=torch.Generator().manual_seed(0))
    assert out["w"].std().item() == pytest.approx(0.5 * 2.0 / 4, rel=0.01) and abs(out["w"].mean().item()) < 1e-3

# ---------------------------------------------------------------- refusals
def test_dp_with_spectral_norm_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(TofError, match="spectral-norm critic.*critic_norm 'none'"):
        DPTrainer(_cfg(critic_norm="spectral"), PAIRS, tmp_path / "a", device="cpu", progress=False)
    with pytest.raises(TofError, match="spectral-norm critic"):
        DPTrainer(_cfg(critic_norm="spectral"), PAIRS, tmp_path / "b", DPConfig(engine="func"), device="cpu", progress=False)
    assert not (tmp_path / "a").exists()                                # refused before anything is written

def test_dp_with_the_penalty_through_opacus_hooks_is_refused(tmp_path):
    with pytest.raises(TofError, match="penalty.*cannot run through opacus.*engine 'func'"):
        DPTrainer(_cfg(gp_lambda=10.0), PAIRS, tmp_path / "a", device="cpu", progress=False)
    tr = DPTrainer(_cfg(gp_lambda=10.0), PAIRS, tmp_path / "b", DPConfig(engine="func"), device="cpu", progress=False).fit()
    assert tr.history[-1]["gp"] > 0 and math.isfinite(tr.spent())

def test_dp_with_inplace_activations_is_refused():
    d = Critic(16, (16, 16, 8), 2, "none"); d.features[1] = nn.LeakyReLU(0.2, inplace=True)
    with pytest.raises(TofError, match="in-place activation 'features.1'.*inplace=False"): check_private_critic(d)

def test_dp_refusal_on_the_command_line(tmp_path):
    r = run_cli("train", "--preset", "quick", "--noise-multiplier", "0.5", "--out", tmp_path / "q", "--quiet")
    assert r.returncode == 2 and "spectral-norm critic" in r.stderr and "Traceback" not in r.stderr

# ---------------------------------------------------------------- files, resume, CLI
def test_dp_resume_is_exact_accountant_included(tmp_path):
    cfg = _cfg(epochs=2)
    a = DPTrainer(cfg, PAIRS, tmp_path / "a", DPConfig(noise_multiplier=0.5), device="cpu", progress=False).fit()
    DPTrainer(cfg, PAIRS, tmp_path / "b", DPConfig(noise_multiplier=0.5), device="cpu", progress=False).fit(epochs=1)
    b = DPTrainer(cfg, PAIRS, tmp_path / "b", DPConfig(noise_multiplier=0.5), device="cpu", resume=True, progress=False).fit()
    assert b.accountant.history == a.accountant.history and b.spent() == a.spent() and b.epsilons == a.epsilons
    for x, y in zip(list(a.G.state_dict().values()) + list(a.D.state_dict().values()),
                    list(b.G.state_dict().values()) + list(b.D.state_dict().values())):
        assert torch.equal(x, y)
    with pytest.raises(TofError, match="other DP settings"):
        DPTrainer(cfg, PAIRS, tmp_path / "b", DPConfig(noise_multiplier=0.5, max_grad_norm=2.0), device="cpu", resume=True, progress=False)

def test_dp_cli_target_epsilon_log_generate_export(tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "--preset", "dp", "--width", "16", "--patch", "16,16,8", "--batch-size", "4", "--epochs", "2",
                "--n-train", "16", "--phantom-shape", "48,56,24", "--snapshot-n", "0", "--target-epsilon", "30",
                "--out", run, "--quiet", check=True)
    assert "with differential privacy" in r.stdout and "epsilon" in r.stdout
    priv = json.loads((run / "run.json").read_text())["privacy"]
    assert 29.0 <= priv["epsilon"] <= 30.0 and priv["target_epsilon"] == 30.0 and len(priv["epsilon_per_epoch"]) == 2
    import csv
    rows = list(csv.DictReader(open(run / "log.csv")))
    eps = [float(r["epsilon"]) for r in rows if r["epsilon"]]
    assert len(eps) == 2 and eps[0] < eps[1] == pytest.approx(priv["epsilon"])          # one per epoch, growing
    run_cli("generate", "--checkpoint", run / "checkpoint.pt", "--n", "3", "--out", tmp_path / "syn", "--quiet", check=True)
    run_cli("export", "--checkpoint", run / "checkpoint.pt", "--out", tmp_path / "g.safetensors", check=True)
    assert len(list((tmp_path / "syn" / "imagesTr").glob("*.nii.gz"))) == 3

def test_exported_dp_generator_keeps_its_epsilon(tmp_path):
    "`tof3dgan export` of a DP checkpoint carries its privacy record, so the audit of the shared file reports epsilon."
    from tof3dgan.checkpoint import export_generator, read_generator_file
    tr = DPTrainer(_cfg(n_train=16, phantom_shape=(48, 56, 24)), PAIRS, tmp_path / "run", device="cpu", progress=False).fit()
    gen = export_generator(tmp_path / "run" / "checkpoint.pt", tmp_path / "g.safetensors")
    read_generator_file(gen)                                            # still a valid, checksummed generator file
    priv = load_source(gen)["privacy"]
    assert priv is not None and priv["epsilon"] == pytest.approx(tr.spent()) and priv["delta"] == 1 / 16

# ---------------------------------------------------------------- the audit
class _Replay(nn.Module):
    "A 'generator' that ignores z and returns the given pairs in turn: a perfect memoriser when given the training pairs."
    def __init__(self, pairs):
        super().__init__(); self.pairs, self.k = torch.from_numpy(pairs), 0; self.w = nn.Parameter(torch.zeros(1))
    def forward(self, z):
        idx = (self.k + torch.arange(len(z))) % len(self.pairs); self.k += len(z)
        return self.pairs[idx]

class _MemoCritic(nn.Module):
    "A 'critic' that scores a pair by minus its distance to the nearest training pair (maximally overfitted)."
    def __init__(self, pairs): super().__init__(); self.t = torch.from_numpy(pairs).flatten(1); self.w = nn.Parameter(torch.zeros(1))
    def forward(self, x): return -torch.cdist(x.flatten(1).float(), self.t).min(1).values

def test_audit_flags_a_memorising_generator_and_clears_an_independent_one():
    T, H, I = random_pairs(96, 1), random_pairs(96, 2), random_pairs(96, 3)
    cfg = get_preset("quick", threshold=0.5, sample_bn="eval")
    mem = audit((_Replay(T), cfg, _MemoCritic(T)), T, H, n_boot=300, progress=False)
    for k in ("black_box_distance", "black_box_distance_features", "white_box_critic"):
        assert mem["membership"][k]["auc"] >= 0.99, (k, mem["membership"][k])
    assert mem["flags"] == {"membership": True, "memorisation": True} and not mem["goal"]["met"]
    assert mem["memorisation"]["voxel"]["frac_closer_to_train"] == 1.0 and mem["memorisation"]["voxel"]["frac_near_copies"] == 1.0
    assert abs(mem["membership"]["black_box_distance"]["untrained_auc"] - 0.5) < 0.15     # what the split alone gives
    assert mem["membership"]["black_box_distance"]["p_value"] < 0.001
    ind = audit((_Replay(I), cfg, _MemoCritic(I)), T, H, n_boot=300, progress=False)
    for k in ("black_box_distance", "black_box_distance_features", "white_box_critic"):
        r = ind["membership"][k]
        assert abs(r["auc"] - 0.5) < 0.1 and r["ci_low"] < 0.5 < r["ci_high"] and r["p_value"] > 0.05, (k, r)
    assert ind["flags"] == {"membership": False, "memorisation": False} and ind["goal"]["met"]

def test_auc_bootstrap_interval_covers_and_tightens():
    r = np.random.default_rng(0)
    a, b = auc_ci(r.normal(1, 1, 50), r.normal(0, 1, 50), seed=1), auc_ci(r.normal(1, 1, 500), r.normal(0, 1, 500), seed=1)
    true = 0.7602                                                       # Phi(1 / sqrt(2))
    assert a["ci_low"] < true < a["ci_high"] and b["ci_low"] < true < b["ci_high"]
    assert b["ci_high"] - b["ci_low"] < (a["ci_high"] - a["ci_low"]) / 2

def test_cluster_bootstrap_widens_the_interval_when_patients_differ():
    "Scores with a patient effect and no membership effect: pairs resampled -> a narrow interval that misses 0.5; patients -> honest."
    r = np.random.default_rng(3)
    def patients(k, seed):
        off = np.random.default_rng(seed).normal(0, 1, k)                # each patient's own level
        return np.concatenate([o + 0.2 * r.normal(size=30) for o in off]), np.repeat(np.arange(k) + 100 * seed, 30)
    (m, gm), (h, gh) = patients(4, 1), patients(4, 2)
    pairs, pats = auc_ci(m, h, seed=0), auc_ci(m, h, seed=0, groups=(gm, gh))
    assert pairs["auc"] == pats["auc"] and pats["resampled"] == "patients" and pats["patients"] == [4, 4]
    assert not (pairs["ci_low"] < 0.5 < pairs["ci_high"]) and pats["ci_low"] < 0.5 < pats["ci_high"]
    assert pats["ci_high"] - pats["ci_low"] > 3 * (pairs["ci_high"] - pairs["ci_low"])

def test_unused_pairs_of_a_store_are_the_same_patients_other_pairs(tmp_path):
    from tof3dgan.data.store import PatchSpec, PrepareConfig, PatchStore, example_dataset, prepare
    from conftest import tiny_dataset
    prepare(tiny_dataset(tmp_path / "raw", n=3), tmp_path / "store",
            PrepareConfig(spec=PatchSpec(patch=(16, 16, 8), n_random=8, n_seg=2), n4=False, denoise="none", spacing=None),
            progress=False)
    full = PatchStore(tmp_path / "store")
    cfg = _cfg(n_train=len(full) // 2)
    used, g_used = real_rows(tmp_path / "store", cfg)
    rest, g_rest = real_rows(tmp_path / "store", cfg, "unused")
    assert len(used) == len(full) // 2 and len(used) + len(rest) == len(full)
    all_rows = {p.tobytes() for p in full.arrays()}
    assert {p.tobytes() for p in used} | {p.tobytes() for p in rest} == all_rows and not {p.tobytes() for p in used} & {p.tobytes() for p in rest}
    assert set(g_used) == set(g_rest)                                    # the same patients on both sides
    with pytest.raises(TofError, match="none is unused"): real_rows(tmp_path / "store", _cfg(n_train=10 ** 6), "unused")

def test_audit_reads_checkpoints_generator_files_and_folders(quick_run, tmp_path):
    from tof3dgan.checkpoint import export_generator
    ck = quick_run / "checkpoint.pt"
    res = audit(ck, "phantom", "phantom:1", out=tmp_path / "a", n_boot=100, progress=False)
    assert res["membership"]["white_box_critic"]["auc"] is not None and res["privacy"] == {
        "dp": False, "epsilon": None, "why": "the model carries no privacy record: it was not trained with differential privacy"}
    saved = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert saved["format"] == "tof3dgan-audit-1" and saved["run"]["inputs"]["model"]["sha256"] == res["model"]["sha256"]
    assert (tmp_path / "a" / "audit.png").stat().st_size > 10_000
    gen = export_generator(ck, tmp_path / "g.safetensors")
    res = audit(gen, "phantom", "phantom:1", n_boot=100, progress=False)
    assert res["membership"]["white_box_critic"]["auc"] is None and "critic" in res["membership"]["white_box_critic"]["why"]
    run_cli("generate", "--checkpoint", ck, "--n", "8", "--out", tmp_path / "syn", "--quiet", check=True)
    cfg = load_source(ck)["cfg"]
    res = audit(tmp_path / "syn", real_pairs("phantom", cfg), real_pairs("phantom:1", cfg), n_boot=100, progress=False)
    assert res["model"]["kind"] == "folder" and res["n"]["synthetic"] == 8 and res["privacy"]["dp"] is False

def test_audit_refuses_pairs_of_another_size(quick_run):
    with pytest.raises(TofError, match="differ in shape"):
        audit(quick_run / "checkpoint.pt", "phantom", random_pairs(8, 0, shape=(32, 32, 16)), progress=False)

def test_audit_cli(quick_run, tmp_path):
    r = run_cli("audit", "--checkpoint", quick_run / "checkpoint.pt", "--train", "phantom", "--holdout", "phantom:1",
                "--out", tmp_path / "audit", "--n-boot", "100", "--quiet", check=True)
    assert "white_box_critic" in r.stdout and "black_box_distance" in r.stdout and "epsilon" in r.stdout
    assert sorted(p.name for p in (tmp_path / "audit").iterdir()) == ["audit.json", "audit.png"]
    r = run_cli("audit", "--checkpoint", quick_run / "checkpoint.pt", "--train", "phantom", "--holdout", "phantom:x",
                "--out", tmp_path / "b", "--quiet")
    assert r.returncode == 2 and "integer seed" in r.stderr

@pytest.mark.parametrize("extra, expected", [
    (["--train", "/nonexistent/store"], "/nonexistent/store are not a folder"),
    (["--n-boot", "0"], "n_boot must be at least 100"),
    (["--goal-auc", "0.2"], "goal_auc must lie between 0.5"),
    (["--n-real", "1"], "n_real must be at least 2"),
])
def test_audit_bad_input_is_one_sentence(quick_run, tmp_path, capsys, extra, expected):
    from conftest import assert_one_line_error
    args = {"--train": "phantom", "--holdout": "phantom:1", "--n-boot": "100"}
    args.update(dict(zip(extra[::2], extra[1::2])))
    argv = ["audit", "--checkpoint", quick_run / "checkpoint.pt", *[x for kv in args.items() for x in kv], "--out", tmp_path / "out", "--quiet"]
    assert_one_line_error(argv, tmp_path, capsys, expected)

def test_audit_takes_a_run_folder_for_its_checkpoint(quick_run):
    res = audit(quick_run, "phantom", "phantom:1", n_boot=100, progress=False)
    assert res["model"]["kind"] == "checkpoint" and res["membership"]["white_box_critic"]["auc"] is not None

def test_train_dp_options_are_dpconfig_fields():
    "The CLI's differential-privacy group maps one to one onto DPConfig (no hand-kept list of names)."
    import dataclasses
    from tof3dgan import cli
    a = cli.parser().parse_args(["train", "--preset", "dp", "--out", "x", "--dp-engine", "func", "--target-epsilon", "5"])
    assert set(a.dp_options) == {f.name for f in dataclasses.fields(DPConfig)}
    assert cli._dp_config(a) == DPConfig(noise_multiplier=None, target_epsilon=5.0, engine="func")
