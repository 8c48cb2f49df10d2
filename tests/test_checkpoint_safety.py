"Issue 11 items 15, 20-22: a spectral critic that is spectral, resume refusing every run-changing setting, an atomic latest link, and load errors that do not hide MemoryError or bugs."
import dataclasses, os, random
from pathlib import Path
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm
import tof3dgan.checkpoint as ckm
from tof3dgan.checkpoint import (check_resume, export_generator, link_latest, load_checkpoint, read_generator_file,
                                 save_checkpoint, verify_checkpoint)
from tof3dgan.core import TofError, get_preset
from tof3dgan.medicalnet import load_medicalnet, official_state_dict
from tof3dgan.networks import Critic, Generator, build_models, init_weights

def _one_sentence(e):
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith("."), msg
    return msg

# ---------------------------------------------------------------- item 15: Critic(norm="spectral") is spectral
def _convs(d): return [m for m in d.features if isinstance(m, nn.Conv3d)]

def test_critic_class_applies_spectral_norm():
    torch.manual_seed(0)                                              # the outcome must not hang on the tests' order
    d = Critic(32, (16, 16, 8), 2, "spectral")
    assert d.norm == "spectral" and len(_convs(d)) == 4
    assert all(parametrize.is_parametrized(m, "weight") for m in _convs(d)) and not parametrize.is_parametrized(d.fc)
    x = torch.randn(2, 2, 16, 16, 8)
    for _ in range(100): d(x)                                         # power iterations run in training mode (one per call)
    for m in _convs(d):
        assert torch.linalg.matrix_norm(m.weight.detach().flatten(1), 2).item() == pytest.approx(1.0, abs=0.02)
    for norm in ("instance", "none"):
        assert not any(parametrize.is_parametrized(m) for m in Critic(32, (16, 16, 8), 2, norm).modules())

def test_init_weights_reaches_the_weight_under_spectral_norm():
    torch.manual_seed(0)
    d = Critic(64, (32, 32, 16), 2, "spectral")
    before = [m.parametrizations.weight.original.detach().clone() for m in _convs(d)]
    d.apply(init_weights)
    for m, b in zip(_convs(d), before):
        w = m.parametrizations.weight.original
        assert not torch.equal(w, b) and w.std().item() == pytest.approx(0.05, abs=0.01)

SPECTRAL_KEYS = sorted([f"features.{i}.{k}" for i in (0, 2, 4, 6) for k in
                        ("bias", "parametrizations.weight.original", "parametrizations.weight.0._u", "parametrizations.weight.0._v")]
                       + ["fc.weight", "fc.bias"])

def _old_build_models(cfg):
    "build_models as it was before item 15: a plain critic, the authors' init, then spectral_norm on each conv."
    g = Generator(cfg.width, cfg.patch, cfg.z_dim, cfg.g_norm)
    d = Critic(cfg.width, cfg.patch, 2, "none")
    g.apply(init_weights); d.apply(init_weights)
    for i, m in enumerate(d.features):
        if isinstance(m, nn.Conv3d): d.features[i] = spectral_norm(m)
    return g, d

def test_spectral_state_dict_and_initial_weights_unchanged():
    "Old checkpoints load (same keys), and a seed gives the same initial networks as before, bit for bit."
    cfg = get_preset("quick")
    assert cfg.critic_norm == "spectral"
    torch.manual_seed(3); g_old, d_old = _old_build_models(cfg)
    torch.manual_seed(3); g_new, d_new = build_models(cfg)
    assert sorted(d_new.state_dict()) == sorted(d_old.state_dict()) == SPECTRAL_KEYS
    assert sorted(Critic(cfg.width, cfg.patch, 2, "spectral").state_dict()) == SPECTRAL_KEYS
    for old, new in ((g_old, g_new), (d_old, d_new)):
        o, n = old.state_dict(), new.state_dict()
        assert all(torch.equal(o[k], n[k]) for k in o), [k for k in o if not torch.equal(o[k], n[k])]
    d_new.load_state_dict(d_old.state_dict(), strict=True)
    assert d_new.norm == "spectral"

# ---------------------------------------------------------------- item 20: resume refuses every run-changing setting
CHANGES = {"label_encoding": "symmetric", "n_critic": 2, "gp_lambda": 5.0, "gp_through_g": True, "reuse_fake": True,
           "lr_d": 1e-4, "lr_g": 1e-3, "phantom_shape": (40, 40, 24)}

@pytest.fixture
def run_folder(tmp_path):
    cfg = get_preset("quick")
    save_checkpoint({"config": cfg.to_dict(), "epoch": 1}, tmp_path / "checkpoints" / "epoch_0001.pt")
    return tmp_path, cfg

@pytest.mark.parametrize("key", sorted(CHANGES))
def test_resume_refuses_each_changed_setting(run_folder, key):
    out, cfg = run_folder
    new = dataclasses.replace(cfg, **{key: CHANGES[key]})
    with pytest.raises(TofError) as e: check_resume(out, new, verbose=False)
    msg = _one_sentence(e)
    assert "other settings" in msg and key in msg
    assert repr(getattr(cfg, key)) in msg and repr(CHANGES[key]) in msg

def test_resume_names_every_difference_at_once(run_folder):
    out, cfg = run_folder
    new = dataclasses.replace(cfg, lr_d=1e-4, n_critic=3, label_encoding="symmetric")
    with pytest.raises(TofError) as e: check_resume(out, new, verbose=False)
    msg = _one_sentence(e)
    assert all(k in msg for k in ("lr_d", "n_critic", "label_encoding")) and "lr_g" not in msg
    assert check_resume(out, dataclasses.replace(cfg, epochs=9), verbose=False)["epoch"] == 1   # epochs may change

# ---------------------------------------------------------------- item 21: the latest link is replaced atomically
class Crash(BaseException):
    "A simulated power cut: nothing after it runs (not even `except Exception` handlers)."

def _two_epochs(tmp_path):
    ck = tmp_path / "checkpoints"
    for e in (1, 2): save_checkpoint({"epoch": e, "w": torch.full((50,), float(e))}, ck / f"epoch_{e:04d}.pt")
    link_latest(ck / "epoch_0001.pt", tmp_path / "checkpoint.pt")
    return ck

@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("k", range(1, 6))
def test_crash_at_any_step_of_link_latest_leaves_a_verifiable_link(tmp_path, monkeypatch, k, when):
    "Crash just before or just after the k-th rename inside link_latest: checkpoint.pt still verifies and loads."
    ck, latest = _two_epochs(tmp_path), tmp_path / "checkpoint.pt"
    real, calls = os.replace, []
    def replace(src, dst):
        calls.append(dst)
        if len(calls) == k and when == "before": raise Crash
        real(src, dst)
        if len(calls) == k: raise Crash
    monkeypatch.setattr(os, "replace", replace)
    try: link_latest(ck / "epoch_0002.pt", latest); crashed = False
    except Crash: crashed = True
    monkeypatch.setattr(os, "replace", real)
    assert verify_checkpoint(latest) == (True, "ok"), (k, when, [Path(c).name for c in calls])
    epoch = load_checkpoint(latest)["epoch"]
    assert epoch in (1, 2) and (crashed or epoch == 2)
    link_latest(ck / "epoch_0002.pt", latest)                               # the next save repairs everything
    assert load_checkpoint(latest)["epoch"] == 2 and verify_checkpoint(latest)[0]

def test_latest_link_still_detects_damage(tmp_path):
    ck, latest = _two_epochs(tmp_path), tmp_path / "checkpoint.pt"
    link_latest(ck / "epoch_0002.pt", latest)
    assert len(Path(str(latest) + ".sha256").read_text().split()) == 1     # after a completed link: one checksum
    raw = bytearray((ck / "epoch_0002.pt").read_bytes()); raw[-30] ^= 0xFF
    latest.unlink(); latest.write_bytes(bytes(raw))
    assert not verify_checkpoint(latest)[0]
    with pytest.raises(TofError, match="fails its checksum"): load_checkpoint(latest)

# ---------------------------------------------------------------- item 22: only the reader's errors mean "corrupt"
@pytest.mark.parametrize("exc", [MemoryError, ZeroDivisionError, NameError])
def test_load_checkpoint_lets_other_errors_through(tmp_path, monkeypatch, exc):
    p = save_checkpoint({"epoch": 1}, tmp_path / "c.pt")
    def boom(*a, **k): raise exc("not the file's fault")
    monkeypatch.setattr(torch, "load", boom)
    with pytest.raises(exc): load_checkpoint(p)

@pytest.mark.parametrize("exc", [MemoryError, ZeroDivisionError])
def test_load_medicalnet_lets_other_errors_through(tmp_path, monkeypatch, exc):
    p = tmp_path / "w.pth"; torch.save({"state_dict": {}}, p)
    def boom(*a, **k): raise exc("not the file's fault")
    monkeypatch.setattr(torch, "load", boom)
    with pytest.raises(exc): load_medicalnet(p)

def test_read_generator_file_lets_memory_error_through(tmp_path, monkeypatch):
    cfg = get_preset("quick")
    g, _ = build_models(cfg)
    save_checkpoint({"config": cfg.to_dict(), "epoch": 1, "G": g.state_dict()}, tmp_path / "c.pt")
    st = export_generator(tmp_path / "c.pt", tmp_path / "g.safetensors")
    import safetensors
    def boom(*a, **k): raise MemoryError
    monkeypatch.setattr(safetensors, "safe_open", boom)
    with pytest.raises(MemoryError): read_generator_file(st)

def _damaged(raw, rng, n):
    "Truncations and random byte changes of `raw`."
    for i in range(n):
        if i % 3 == 0: yield raw[:rng.randrange(len(raw))]
        else:
            b = bytearray(raw)
            for _ in range(rng.randint(1, 4)): b[rng.randrange(len(b))] = rng.randrange(256)
            yield bytes(b)

def test_damaged_files_still_give_tof_errors(tmp_path):
    "Narrowing the except clauses must not turn a damaged file into a traceback (truncations and byte changes)."
    rng = random.Random(0)
    save_checkpoint({"format": "x", "epoch": 1, "G": {"w": torch.randn(8, 8)}, "config": {"a": [1, 2]}}, tmp_path / "c.pt")
    torch.save({"state_dict": {"module.conv1.weight": torch.randn(4, 1, 3, 3, 3)}}, tmp_path / "m.pth")
    cfg = get_preset("quick"); g, _ = build_models(cfg)
    save_checkpoint({"config": cfg.to_dict(), "epoch": 1, "G": {k: v for k, v in list(g.state_dict().items())[:3]}}, tmp_path / "s.pt")
    st = export_generator(tmp_path / "s.pt", tmp_path / "g.safetensors")
    for src, load in ((tmp_path / "c.pt", lambda p: load_checkpoint(p, verify=False)), (tmp_path / "m.pth", load_medicalnet),
                      (st, read_generator_file)):
        for i, raw in enumerate(_damaged(src.read_bytes(), rng, 150)):
            p = tmp_path / f"bad_{i}{src.suffix}"; p.write_bytes(raw)
            try: load(p)
            except TofError: pass
            p.unlink()
