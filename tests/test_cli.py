import json
from pathlib import Path
import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import run_cli, assert_one_line_error

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
    for png in ("losses.png", "real_vs_synthetic.png", "vessels_3d.png"):
        assert (out / "report" / png).read_bytes()[:4] == b"\x89PNG"
    # the report's real patches hold vessels, and the shipped generator is shown beside them with its metrics
    from tof3dgan.core import get_preset
    from tof3dgan.data.store import load_pairs
    from tof3dgan.pretrained import DEFAULT_MODEL, model_card
    pairs = load_pairs("phantom", get_preset("quick"), progress=False)
    assert len(s["report_real_pairs"]) == 4 and all(pairs[i, 1].mean() >= 0.005 for i in s["report_real_pairs"])
    assert s["shipped_model"]["name"] == DEFAULT_MODEL and s["shipped_model"]["sha256"] == model_card(DEFAULT_MODEL)["sha256"]
    for k in ("demo_gan", "shipped"):
        assert {"label_fraction", "components", "largest_fraction", "label_fidelity"} <= set(s["metrics"][k]["synthetic"]), k
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

def test_generate_cli_defaults_follow_the_authors(quick_run, tmp_path):
    "Batches of 8 (never a final batch of 1), fp32 sampling and per-patch min-max images unless asked otherwise."
    run_cli("generate", "--checkpoint", quick_run / "checkpoint.pt", "--n", 9, "--out", tmp_path / "a", "--quiet", check=True)
    g = json.loads((tmp_path / "a" / "generation.json").read_text())
    assert (g["batch_size"], g["padded_samples"], g["precision"], g["scaling"]) == (8, 7, "fp32", "minmax")
    for p in (tmp_path / "a" / "imagesTr").iterdir():
        a = np.asanyarray(nib.load(p).dataobj)
        assert (a.min(), a.max()) == (0, 255)

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

def test_resume_without_checkpoint_starts_the_run(tmp_path):
    "Issue 11.5: a job requeued with --resume before its first checkpoint goes on; damaged checkpoints are still refused."
    r = run_cli("train", "--preset", "quick", "--out", tmp_path / "new", "--resume", "--quiet", check=True)
    assert f"no checkpoint in {tmp_path / 'new'} yet: starting the run from epoch 0" in r.stdout
    assert (tmp_path / "new" / "checkpoint.pt").exists()
    bad = tmp_path / "bad" / "checkpoints" / "epoch_0001.pt"; bad.parent.mkdir(parents=True); bad.write_bytes(b"junk" * 50)
    msg = _one_error_line(run_cli("train", "--preset", "quick", "--out", tmp_path / "bad", "--resume", "--quiet"))
    assert "holds no valid checkpoint" in msg and bad.read_bytes() == b"junk" * 50

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

# ---------------------------------------------------------------- issue 11 A7: a new user's run from their own scans
@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    from conftest import tiny_dataset
    root = tmp_path_factory.mktemp("store")
    src = tiny_dataset(root / "raw", 3, (48, 56, 24), seed=4)
    run_cli("prepare", src, root / "store", "--patch", "16,16,8", "--n-random", 20, "--n-seg", 2, "--spacing", "keep",
            "--no-n4", "--denoise", "none", "--splits", "0.34,0.33,0.33", "--quiet", check=True)
    return root

def test_train_on_a_store_honours_n_train_and_says_what_will_run(small_store, tmp_path):
    n_store = json.loads((small_store / "store" / "gan_train.json").read_text())["n"]
    r = run_cli("train", "--preset", "quick", "--data", small_store / "store", "--out", tmp_path / "run", "--quiet", check=True)
    plan = next(l for l in r.stdout.splitlines() if l.startswith("Training "))
    assert plan == (f"Training quick on 8 pairs (store {small_store / 'store'}, seeded subset of {n_store}): "
                    "4 steps/epoch x 2 epochs, cpu, 1 thread (OMP_NUM_THREADS), fast path: channels_last, fused_adam, "
                    "fused_upsample"), plan
    assert r.stdout.index(plan) < r.stdout.index("Trained quick")                  # said before training
    assert "(8 steps" in r.stdout and json.loads((tmp_path / "run" / "config.json").read_text())["n_train"] == 8
    r = run_cli("train", "--preset", "quick", "--n-train", 1000, "--epochs", 1, "--data", small_store / "store", "--out",
                tmp_path / "all", "--quiet", check=True)
    assert f"on {n_store} pairs (store {small_store / 'store'}, all it holds: fewer than n_train 1000)" in r.stdout

@pytest.mark.parametrize("umask", [0o002, 0o027])
def test_outputs_follow_the_umask(small_store, tmp_path, umask):
    "Stores and output folders get the modes of a plain mkdir/open under the user's umask, not tempfile's 0700/0600."
    import os, stat, subprocess, sys
    code = (f"import os, sys; os.umask({umask}); from tof3dgan.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    def cli(*args):
        r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
        assert r.returncode == 0, r.stderr
    cli("prepare", small_store / "raw", tmp_path / "store", "--patch", "16,16,8", "--n-random", 2, "--n-seg", 2,
        "--spacing", "keep", "--no-n4", "--denoise", "none", "--quiet")
    cli("train", "--preset", "quick", "--epochs", 1, "--data", tmp_path / "store", "--out", tmp_path / "run", "--quiet")
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    for root in (tmp_path / "store", tmp_path / "run"):
        assert mode(root) == 0o777 & ~umask, (root, oct(mode(root)))
        for p in root.rglob("*"):
            assert mode(p) == (0o777 if p.is_dir() else 0o666) & ~umask, (p, oct(mode(p)))

def test_threads_and_the_fast_path_are_chosen_and_recorded(tmp_path, capsys):
    "--threads wins over OMP_NUM_THREADS, the fast path resolves per device, an explicit --no-... wins; both land in run.json."
    run_cli("train", "--preset", "quick", "--epochs", "1", "--out", tmp_path / "run", "--quiet", "--threads", "2",
            "--no-fused-upsample", check=True)
    rj = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (rj["threads"]["threads"], rj["threads"]["source"]) == (2, "requested"), rj["threads"]
    assert rj["fast_path"] == {"channels_last": True, "fused_adam": True, "fused_upsample": False}, rj["fast_path"]
    assert rj["config"]["fused_upsample"] is False and rj["config"]["channels_last"] is None   # the request, as given
    assert_one_line_error(["train", "--preset", "quick", "--out", tmp_path / "bad", "--threads", "0"], tmp_path, capsys,
                          "--threads must be 1 or more", must_not_exist=("bad",))
