import json
from pathlib import Path
import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import run_cli

def _one_error_line(r):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("tof3dgan: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]

def test_demo_end_to_end_quick(tmp_path):
    out = tmp_path / "demo"
    r = run_cli("demo", "--preset", "quick", "--out", out, "--n", "3", check=True)
    for k in ("checkpoint", "synthetic", "losses_png", "grid_png", "summary"):
        assert k in r.stdout
    s = json.loads((out / "report" / "summary.json").read_text())
    assert s["preset"] == "quick" and s["steps"] == 8 and Path(s["paths"]["checkpoint"]).exists()
    assert len(list((out / "synthetic" / "imagesTr").glob("*.nii.gz"))) == 3
    for png in ("losses.png", "real_vs_synthetic.png"):
        assert (out / "report" / png).read_bytes()[:4] == b"\x89PNG"
    assert "demo" in r.stderr or "train quick" in r.stderr            # progress bars went to stderr
    assert _one_error_line(run_cli("demo", "--preset", "quick", "--out", out)).endswith("pass --overwrite.")

def test_generate_writes_loadable_binary_nifti_pairs(quick_run, tmp_path):
    out = tmp_path / "syn"
    r = run_cli("generate", "--checkpoint", quick_run / "checkpoint.pt", "--n", 5, "--out", out, "--threshold", 0.3,
                "--batch-size", 2, "--quiet", check=True)
    assert "Wrote 5" in r.stdout
    imgs, labs = sorted((out / "imagesTr").iterdir()), sorted((out / "labelsTr").iterdir())
    assert [p.name for p in imgs] == [f"syn_{i:05d}_0000.nii.gz" for i in range(5)]
    assert [p.name for p in labs] == [f"syn_{i:05d}.nii.gz" for i in range(5)]
    for ip, lp in zip(imgs, labs):
        im, lb = nib.load(ip), nib.load(lp)
        assert im.shape == lb.shape == (16, 16, 8)
        assert im.header.get_zooms() == lb.header.get_zooms() == pytest.approx((0.5, 0.5, 0.7))
        assert np.allclose(im.affine, np.diag([0.5, 0.5, 0.7, 1.0]))
        a, l = np.asanyarray(im.dataobj), np.asanyarray(lb.dataobj)
        assert a.dtype == np.uint8 and l.dtype == np.uint8 and set(np.unique(l)) <= {0, 1}
        assert im.header["descrip"].tobytes().startswith(b"tof3dgan synthetic")
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["numTraining"] == 5 and ds["labels"] == {"background": 0, "vessel": 1} and ds["file_ending"] == ".nii.gz"
    g = json.loads((out / "generation.json").read_text())
    assert g["threshold"] == 0.3 and g["bn"] == "train" and len(g["checkpoint_sha256"]) == 64
    assert not list(tmp_path.glob("*.partial-*"))

def test_generate_is_seeded_and_threshold_and_bn_matter(quick_run, tmp_path):
    def labels(out, *extra):
        run_cli("generate", "--checkpoint", quick_run / "checkpoint.pt", "--n", 2, "--out", out, "--quiet", *extra, check=True)
        return np.stack([np.asanyarray(nib.load(p).dataobj) for p in sorted((out / "imagesTr").iterdir())])
    a, b = labels(tmp_path / "a"), labels(tmp_path / "b")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, labels(tmp_path / "c", "--bn", "eval"))
    assert not np.array_equal(a, labels(tmp_path / "d", "--seed", "1"))

def test_unknown_preset(tmp_path):
    msg = _one_error_line(run_cli("train", "--preset", "paper_xl", "--out", tmp_path / "o"))
    assert "Unknown preset 'paper_xl'" in msg and "paper_sn_mp" in msg
    assert not (tmp_path / "o").exists()

def test_missing_checkpoint(tmp_path):
    msg = _one_error_line(run_cli("generate", "--checkpoint", tmp_path / "none.pt", "--n", 2, "--out", tmp_path / "o"))
    assert "does not exist" in msg and not (tmp_path / "o").exists()

@pytest.mark.parametrize("damage", ["truncated", "garbage", "not_ours", "pickle_payload"])
def test_corrupt_checkpoint(quick_run, tmp_path, damage):
    bad = tmp_path / "bad.pt"
    data = (quick_run / "checkpoint.pt").read_bytes()
    if damage == "truncated": bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage": bad.write_bytes(b"\x00not a checkpoint" * 100)
    elif damage == "not_ours": torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)
    else:
        class Evil:
            def __reduce__(self): return (Path.touch, (tmp_path / "pwned",))
        torch.save({"format": "tof3dgan-checkpoint-1", "x": Evil()}, bad)
    msg = _one_error_line(run_cli("generate", "--checkpoint", bad, "--n", 2, "--out", tmp_path / "o"))
    assert str(bad) in msg
    assert not (tmp_path / "o").exists() and not (tmp_path / "pwned").exists()

def test_checkpoint_from_another_architecture(quick_run, tmp_path):
    ck = torch.load(quick_run / "checkpoint.pt", weights_only=True)
    ck["config"]["width"] = 32                      # weights are width 16
    torch.save(ck, tmp_path / "other.pt")
    msg = _one_error_line(run_cli("generate", "--checkpoint", tmp_path / "other.pt", "--n", 2, "--out", tmp_path / "o"))
    assert "do not fit the architecture" in msg and not (tmp_path / "o").exists()
    r = run_cli("train", "--preset", "demo", "--out", quick_run, "--resume", "--quiet")
    assert "trained with other settings" in _one_error_line(r)

def test_unwritable_output(quick_run, tmp_path):
    blocker = tmp_path / "a_file"; blocker.write_text("x")
    msg = _one_error_line(run_cli("generate", "--checkpoint", quick_run / "checkpoint.pt", "--n", 2, "--out", blocker / "o"))
    assert "choose a writable --out" in msg or "not a folder" in msg
    msg = _one_error_line(run_cli("generate", "--checkpoint", quick_run / "checkpoint.pt", "--n", 2, "--out", blocker))
    assert "not a folder" in msg
    assert blocker.read_text() == "x"

def test_resume_without_checkpoint(tmp_path):
    msg = _one_error_line(run_cli("train", "--preset", "quick", "--out", tmp_path / "new", "--resume", "--quiet"))
    assert "holds no checkpoint" in msg

def test_presets_listed():
    r = run_cli("presets", check=True)
    for name in ("paper_gp", "paper_sn", "paper_sn_mp", "paper_c_sn_mp", "quick", "demo"):
        assert name in r.stdout

def test_evaluate_cli_writes_table1(quick_run, tmp_path):
    for name, seed in (("real", 1), ("syn", 0)):
        run_cli("generate", "--checkpoint", quick_run / "checkpoint.pt", "--n", 12, "--out", tmp_path / name, "--seed", seed, "--quiet", check=True)
    r = run_cli("evaluate", "--real", tmp_path / "real", "--synthetic", tmp_path / "syn", "--out", tmp_path / "eval", "--quiet", check=True)
    assert "FID" in r.stdout and "random-init" in r.stdout
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert np.isfinite(m["fid"]) and 0 <= m["prd"]["prd_auc"] <= 1 and m["features"]["normalisation"] == "medicalnet"
    for f in ("metrics.csv", "prd.png", "topology.csv"): assert (tmp_path / "eval" / f).exists()
