"""The shipped generator: listed, checksummed against its card, loaded without pickle, refused when tampered with, and
drawing vessel-like labels within the bounds measured when it was shipped; and the wheel carries it."""
import json, os, pickle, shutil, subprocess, sys, zipfile
from pathlib import Path
import numpy as np
import pytest
import torch
from conftest import ROOT
from tof3dgan.core import TofError, sha256_file
from tof3dgan.pretrained import (DEFAULT_MODEL, MODEL_DIR, list_models, load_model, model_card, model_path, sample_pairs,
                                 vessel_metrics)

CARD_FIELDS = ("name", "summary", "sha256", "size_bytes", "config", "intended_use", "limitations", "data", "training",
               "sampling", "metrics", "checks")

SHIPPED = list_models()

def test_default_model_is_shipped():
    assert DEFAULT_MODEL in SHIPPED and MODEL_DIR == ROOT / "tof3dgan" / "models"

@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_has_a_complete_card(name):
    card = model_card(name)
    for k in CARD_FIELDS: assert k in card, k
    for k in ("steps", "epochs", "seconds", "machine", "command"): assert k in card["training"], k
    assert card["training"]["steps"] > 0 and "no GPU" in card["training"]["machine"]
    for k in ("label_fraction", "components", "largest_fraction", "label_fidelity"):
        assert k in card["metrics"]["real"] and k in card["metrics"]["synthetic"], k
    assert card["name"] == name and (MODEL_DIR / f"{name}.md").read_text().count(card["sha256"]) == 1   # the readable card agrees

@pytest.mark.parametrize("name", SHIPPED)
def test_file_checksum_and_size_match_the_card(name):
    card, p = model_card(name), model_path(name, verify=False)
    assert sha256_file(p) == card["sha256"]
    assert p.stat().st_size == card["size_bytes"] and p.stat().st_size < 8 * 2**20          # a few MB

@pytest.mark.parametrize("name", SHIPPED)
def test_loads_without_unpickling_anything(monkeypatch, name):
    def refuse(*a, **k): raise AssertionError("unpickling attempted")
    monkeypatch.setattr(pickle, "load", refuse); monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse); monkeypatch.setattr(torch, "load", refuse)
    g, cfg = load_model(name)
    card = model_card(name)["config"]                          # settings added after the card was written take their defaults
    assert {k: v for k, v in cfg.to_dict().items() if k in card} == card
    assert sum(p.numel() for p in g.parameters()) == model_card(name)["n_parameters"]

def _copy(root: Path, name=DEFAULT_MODEL) -> Path:
    root.mkdir(exist_ok=True)
    for ext in ("json", "safetensors"): shutil.copy(MODEL_DIR / f"{DEFAULT_MODEL}.{ext}", root / f"{name}.{ext}")
    return root

def test_tampered_copies_are_refused(tmp_path):
    root = _copy(tmp_path / "a")
    load_model(DEFAULT_MODEL, root=root)                                 # an intact copy loads
    w = root / f"{DEFAULT_MODEL}.safetensors"
    b = bytearray(w.read_bytes()); b[len(b) // 2] ^= 0x01; w.write_bytes(bytes(b))     # one bit of one weight
    with pytest.raises(TofError, match="does not match the SHA-256 in its model card"): load_model(DEFAULT_MODEL, root=root)
    root = _copy(tmp_path / "b")                                         # the card edited instead of the file
    c = json.loads((root / f"{DEFAULT_MODEL}.json").read_text()); c["sha256"] = "0" * 64
    (root / f"{DEFAULT_MODEL}.json").write_text(json.dumps(c))
    with pytest.raises(TofError, match="does not match the SHA-256"): model_path(DEFAULT_MODEL, root=root)
    (root / f"{DEFAULT_MODEL}.json").write_text("{not json")
    with pytest.raises(TofError, match="not valid JSON"): model_card(DEFAULT_MODEL, root=root)
    with pytest.raises(TofError, match=f"No shipped model named 'nope' \\(shipped: {', '.join(SHIPPED)}\\)"): load_model("nope")

@pytest.mark.parametrize("name", SHIPPED)
def test_samples_are_vessel_like_within_the_shipped_bounds(name):
    card = model_card(name); chk = card["checks"]
    g, cfg = load_model(name)
    from tof3dgan.phantom import phantom_pairs
    ref = phantom_pairs(32, cfg.patch, cfg.phantom_shape, cfg.spacing, seed=card["metrics"]["reference_seed"], progress=False)
    fake = sample_pairs(g, cfg, chk["n_samples"], seed=chk["sample_seed"], batch_size=chk["batch_size"])
    m = vessel_metrics(fake, ref, cfg.spacing)["synthetic"]
    lo, hi = chk["label_fraction_range"]
    assert lo <= m["label_fraction"] <= hi, m
    assert m["components"] <= chk["components_max"] and m["largest_fraction"] >= chk["largest_fraction_min"], m
    assert m["empty_labels"] <= chk["empty_labels_max"] and m["label_fidelity"] >= chk["label_fidelity_min"], m
    # the bounds do tell tubes from speckle: scattered single voxels fail them
    speck = fake.copy(); speck[:, 1] = 0; speck[:, 1, ::5, ::5, ::3] = 1
    s = vessel_metrics(speck, ref, cfg.spacing)["synthetic"]
    assert s["components"] > chk["components_max"] and s["largest_fraction"] < chk["largest_fraction_min"]

def test_generate_writes_pairs_from_the_shipped_file(tmp_path):
    from tof3dgan.generate import generate
    out = generate(model_path(DEFAULT_MODEL), 3, tmp_path / "syn", batch_size=8, progress=False)
    assert len(list((out / "labelsTr").glob("*.nii.gz"))) == 3
    assert json.loads((out / "generation.json").read_text())["checkpoint_sha256"] == model_card(DEFAULT_MODEL)["sha256"]

def test_wheel_carries_the_models_and_loads_them_after_install(tmp_path):
    "A fresh (non-editable) install from the wheel lists and loads the shipped generator, from a folder outside the repo."
    src = tmp_path / "src"                                               # a copy: the build writes nothing into the checkout
    shutil.copytree(ROOT / "tof3dgan", src / "tof3dgan", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        if (ROOT / f).exists(): shutil.copy(ROOT / f, src / f)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    whl = next((tmp_path / "w").glob("tof3dgan-*.whl"))
    names = zipfile.ZipFile(whl).namelist()
    for ext in ("safetensors", "json", "md"):
        for name in SHIPPED: assert f"tof3dgan/models/{name}.{ext}" in names, (name, ext)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"), str(whl)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]; "
            "sys.path_importer_cache.clear(); "                          # no `pip install -e` finder: the wheel's files only
            "import tof3dgan, tof3dgan.pretrained as P; g, cfg = P.load_model(P.DEFAULT_MODEL); "
            "print(sorted({m.__file__.split('tof3dgan')[0] for k, m in sys.modules.items() if k.startswith('tof3dgan')}), "
            "P.list_models(), cfg.name)")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"['{tmp_path / 'site'}/']" in r.stdout and DEFAULT_MODEL in r.stdout, r.stdout
