"Issue 6: crash safety, safe loading, numerical and resource faults, the bad-input corpus, run records."
import errno, json, os, random, signal, subprocess, sys, time
from pathlib import Path
import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import AFF, run_cli, write_nifti
from tof3dgan import cli
from tof3dgan.checkpoint import export_generator, latest_valid, load_checkpoint, verify_checkpoint
from tof3dgan.core import TofError, get_preset
from tof3dgan.train import Trainer
from tof3dgan.data.store import load_pairs

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TRAIN = ["train", "--preset", "quick", "--epochs", "10", "--n-train", "48", "--quiet"]

def _popen(args):
    return subprocess.Popen([sys.executable, "-c", "import sys; from tof3dgan.cli import main; sys.exit(main())", *map(str, args)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

def test_random_sigkills_always_resume_to_identical_weights(tmp_path):
    run_cli(*TRAIN, "--out", tmp_path / "full", check=True)
    out, rng, kills = tmp_path / "killed", random.Random(1), 0
    while True:
        resume = latest_valid(out / "checkpoints")[0] is not None
        p = _popen(TRAIN + ["--out", out] + (["--resume"] if resume else []))
        if kills < 4:
            time.sleep(rng.uniform(1.5, 3.5))        # python start-up ~1.5 s, then a few epochs of ~0.4 s
            if p.poll() is None:
                p.send_signal(signal.SIGKILL); p.wait(); kills += 1; continue
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
        break
    assert kills >= 3
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 10
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"]) and all(torch.equal(a["D"][k], b["D"][k]) for k in a["D"])
    for opt in ("opt_g", "opt_d"):                                              # Adam moments too
        sa, sb = a[opt]["state"], b[opt]["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    assert len(list((out / "checkpoints").glob("epoch_*.pt"))) == 3          # keep_last
    assert all(verify_checkpoint(p)[0] for p in (out / "checkpoints").glob("epoch_*.pt"))
    assert not list(out.rglob("*.tmp"))

def test_resume_skips_damaged_newest_checkpoint(quick_run, tmp_path, capsys):
    import shutil
    run = tmp_path / "run"; shutil.copytree(quick_run, run)
    newest = sorted((run / "checkpoints").glob("epoch_*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:1000])                              # truncated by a crash
    cfg = get_preset("quick", epochs=3)
    t = Trainer(cfg, load_pairs("phantom", cfg, progress=False), run, resume=True, progress=True)
    said = capsys.readouterr().out
    assert f"skipping {newest.name}: checksum mismatch" in said and "continuing from epoch_0001.pt" in said
    assert t.epoch == 1
    t.fit()
    assert t.epoch == 3 and verify_checkpoint(run / "checkpoints" / "epoch_0002.pt")[0]

def test_safetensors_generator_round_trip_and_tamper(quick_run, tmp_path):
    st = export_generator(quick_run / "checkpoint.pt", tmp_path / "g.safetensors")
    run_cli("generate", "--checkpoint", st, "--n", 3, "--out", tmp_path / "a", "--quiet", check=True)
    run_cli("generate", "--checkpoint", quick_run / "checkpoint.pt", "--n", 3, "--out", tmp_path / "b", "--quiet", check=True)
    for f in sorted((tmp_path / "a" / "imagesTr").iterdir()):
        assert np.array_equal(np.asanyarray(nib.load(f).dataobj), np.asanyarray(nib.load(tmp_path / "b" / "imagesTr" / f.name).dataobj))
    raw = bytearray(st.read_bytes()); raw[-5] ^= 0xFF; (tmp_path / "t.safetensors").write_bytes(bytes(raw))
    r = run_cli("generate", "--checkpoint", tmp_path / "t.safetensors", "--n", 1, "--out", tmp_path / "c")
    assert r.returncode == 2 and "tampered" in r.stderr and not (tmp_path / "c").exists()

def test_divergence_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = get_preset("quick", epochs=5, max_abs_loss=1e-12, diverge_steps=6)     # every step "explodes"
    t = Trainer(cfg, load_pairs("phantom", cfg, progress=False), tmp_path / "r", progress=False)
    with pytest.raises(TofError, match=r"diverged at step 6 .*last good checkpoint .*epoch_0001.pt is kept.*Lower the learning rates"):
        t.fit()
    assert verify_checkpoint(tmp_path / "r" / "checkpoints" / "epoch_0001.pt")[0]

def test_disk_full_during_checkpoint_keeps_previous(tmp_path, monkeypatch):
    import tof3dgan.checkpoint as ckm
    cfg = get_preset("quick", epochs=3)
    t = Trainer(cfg, load_pairs("phantom", cfg, progress=False), tmp_path / "r", progress=False)
    t.fit(1)
    real_save = torch.save
    def full(obj, f, *a, **k):
        with open(f, "wb") as fh: fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(ckm.torch, "save", full)
    with pytest.raises(TofError, match="the disk is full"): t.fit(2)
    monkeypatch.setattr(ckm.torch, "save", real_save)
    assert [p.name for p in (tmp_path / "r" / "checkpoints").glob("epoch_*.pt")] == ["epoch_0001.pt"]
    assert verify_checkpoint(tmp_path / "r" / "checkpoint.pt")[0] and load_checkpoint(tmp_path / "r" / "checkpoint.pt")["epoch"] == 1
    assert not [p for p in (tmp_path / "r").rglob("*") if p.name.endswith(".tmp")]

def test_disk_full_during_generate_leaves_nothing(quick_run, tmp_path, monkeypatch):
    import tof3dgan.generate as gen
    calls = {"n": 0}; real = gen.nib.save
    def flaky(img, path):
        calls["n"] += 1
        if calls["n"] > 3: raise OSError(errno.ENOSPC, "No space left on device")
        real(img, path)
    monkeypatch.setattr(gen.nib, "save", flaky)
    with pytest.raises(TofError, match="the disk is full"):
        gen.generate(quick_run / "checkpoint.pt", 6, tmp_path / "syn", progress=False)
    assert list(tmp_path.iterdir()) == []

def test_out_of_memory_gives_advice(tmp_path, monkeypatch):
    cfg = get_preset("quick", epochs=1)
    t = Trainer(cfg, load_pairs("phantom", cfg, progress=False), tmp_path / "r", progress=False)
    def oom(*a, **k): raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(t, "train_step", oom)
    with pytest.raises(TofError, match=r"Out of memory .*--precision mixed .*--batch-size"): t.fit()

def test_run_json_everywhere(quick_run, tmp_path):
    r = json.loads((quick_run / "run.json").read_text())
    assert r["kind"] == "train" and r["seed"] == 0 and r["config"]["name"] == "quick" and r["versions"]["torch"]
    run_cli("generate", "--checkpoint", quick_run / "checkpoint.pt", "--n", 1, "--out", tmp_path / "g", "--quiet", check=True)
    g = json.loads((tmp_path / "g" / "run.json").read_text())
    assert g["inputs"]["checkpoint"]["sha256"] == json.loads((tmp_path / "g" / "generation.json").read_text())["checkpoint_sha256"]

# ---------------------------------------------------------------- the bad-input corpus

def _dataset(root, image=None, label=None, name="bad"):
    "An nnU-Net folder with one good case and one case whose image/label the corpus replaced."
    from tof3dgan.phantom import make_phantom
    ph = make_phantom((40, 40, 24), seed=0)
    write_nifti(root / "imagesTr" / "good_0000.nii.gz", ph.image); write_nifti(root / "labelsTr" / "good.nii.gz", ph.label)
    ip, lp = root / "imagesTr" / f"{name}_0000.nii.gz", root / "labelsTr" / f"{name}.nii.gz"
    (image or (lambda p: write_nifti(p, ph.image)))(ip); (label or (lambda p: write_nifti(p, ph.label)))(lp)
    return root

def _bytes(b): return lambda p: (p.parent.mkdir(parents=True, exist_ok=True), p.write_bytes(b))
def _arr(a, aff=AFF): return lambda p: write_nifti(p, a, aff)

def _absurd_header(p):
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), AFF); img.header["dim"][1:4] = [30000, 30000, 30000]
    p.parent.mkdir(parents=True, exist_ok=True); p.write_bytes(img.header.binaryblock + b"\x00" * 64)

def _symlink_loop(p):
    p.parent.mkdir(parents=True, exist_ok=True); os.symlink(p.name, p)

def _folder(p): p.mkdir(parents=True)

PH = np.random.default_rng(0).random((40, 40, 24)).astype(np.float32)
LB = (PH > 0.9).astype(np.uint8)

PREPARE = {
    "truncated_nifti": (dict(image=lambda p: (write_nifti(p, PH), p.write_bytes(p.read_bytes()[:300]))), "truncated, corrupt"),
    "corrupt_gzip": (dict(image=_bytes(b"\x1f\x8b\x08\x00garbage" * 20)), "truncated, corrupt"),
    "nan_voxels": (dict(image=_arr(np.where(PH > 0.5, np.nan, PH))), "NaN or infinite"),
    "inf_voxels": (dict(image=_arr(np.where(PH > 0.99, np.inf, PH))), "NaN or infinite"),
    "shape_mismatch": (dict(label=_arr(LB[:-2])), "same grid"),
    "affine_mismatch": (dict(label=_arr(LB, np.diag([0.9, 0.5, 0.7, 1.0]))), "affines differ"),
    "probabilistic_label": (dict(label=_arr(PH)), "--label-threshold"),
    "multiclass_label": (dict(label=_arr((PH * 13).astype(np.uint8))), "--label-classes"),
    "empty_label": (dict(label=_arr(np.zeros_like(LB))), "empty"),
    "image_2d": (dict(image=_arr(PH[:, :, 0])), "3D volume"),
    "image_4d": (dict(image=_arr(np.stack([PH, PH], -1))), "3D volume"),
    "absurd_header": (dict(image=_absurd_header), "truncated, corrupt"),
    "text_named_nifti": (dict(image=_bytes(b"this is not an image\n")), "truncated, corrupt"),
    "png_named_nifti": (dict(image=_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)), "truncated, corrupt"),
    "folder_not_file": (dict(image=_folder), "truncated, corrupt"),   # root ignores permissions, so an unreadable path is a folder
    "symlink_loop": (dict(image=_symlink_loop), "truncated, corrupt"),
}

def _corpus_cases(tmp):
    "(argv, expected text, paths that must not appear) for each malformed input."
    out = tmp / "out"
    cases = {}
    for k, (kw, msg) in PREPARE.items():
        cases[f"prepare/{k}"] = (lambda kw=kw, k=k: ["prepare", _dataset(tmp / k, **kw), out, "--spacing", "keep", "--patch", "16,16,8"], msg)
    def dup():
        ds = _dataset(tmp / "dup"); (tmp / "dup.csv").write_text(
            f"case,image,label\na,{ds}/imagesTr/good_0000.nii.gz,{ds}/labelsTr/good.nii.gz\na,{ds}/imagesTr/bad_0000.nii.gz,{ds}/labelsTr/bad.nii.gz\n")
        return ["prepare", tmp / "dup.csv", out]
    cases["prepare/duplicate_cases"] = (dup, "appears twice")
    def nolabel():
        ds = _dataset(tmp / "nolab"); (ds / "labelsTr" / "bad.nii.gz").unlink(); return ["prepare", ds, out]
    cases["prepare/missing_label"] = (nolabel, "has no label")
    cases["prepare/missing_source"] = (lambda: ["prepare", tmp / "nowhere", out], "does not exist")
    def badcsv():
        (tmp / "cols.csv").write_text("name,img\nx,y\n"); return ["prepare", tmp / "cols.csv", out]
    cases["prepare/csv_columns"] = (badcsv, "needs columns")
    def empty():
        (tmp / "empty" / "imagesTr").mkdir(parents=True); (tmp / "empty" / "labelsTr").mkdir(); return ["prepare", tmp / "empty", out]
    cases["prepare/no_cases"] = (empty, "No cases found")
    cases["train/unknown_preset"] = (lambda: ["train", "--preset", "paper_xl", "--out", out], "Unknown preset")
    cases["train/missing_data"] = (lambda: ["train", "--preset", "quick", "--data", tmp / "nodata", "--out", out], "is not a folder")
    def wrongpatch():
        d = tmp / "pairs"; write_nifti(d / "imagesTr" / "a_0000.nii.gz", PH); write_nifti(d / "labelsTr" / "a.nii.gz", LB)
        return ["train", "--preset", "quick", "--data", d, "--out", out]
    cases["train/wrong_patch_size"] = (wrongpatch, "trains on (16, 16, 8) patches")
    cases["train/resume_nothing"] = (lambda: ["train", "--preset", "quick", "--out", out, "--resume"], "holds no checkpoint")
    def outfile():
        (tmp / "afile").write_text("x"); return ["train", "--preset", "quick", "--out", tmp / "afile" / "run"]
    cases["train/out_under_a_file"] = (outfile, "")
    cases["generate/missing_checkpoint"] = (lambda: ["generate", "--checkpoint", tmp / "no.pt", "--n", 1, "--out", out], "does not exist")
    cases["generate/garbage_checkpoint"] = (lambda: ["generate", "--checkpoint", _bytes(b"junk" * 50)(tmp / "j.pt") and tmp / "j.pt", "--n", 1, "--out", out], "cannot be read")
    def pickled():
        class Evil:
            def __reduce__(self): return (os.system, ("touch " + str(tmp / "pwned"),))
        torch.save({"format": "tof3dgan-checkpoint-1", "x": Evil()}, tmp / "evil.pt"); return ["generate", "--checkpoint", tmp / "evil.pt", "--n", 1, "--out", out]
    cases["generate/pickle_payload"] = (pickled, "cannot be read")
    cases["generate/zero_n"] = (lambda: ["generate", "--checkpoint", tmp / "no.pt", "--n", 0, "--out", out], "at least 1")
    cases["generate/bad_safetensors"] = (lambda: ["generate", "--checkpoint", _bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")(tmp / "x.safetensors") and tmp / "x.safetensors", "--n", 1, "--out", out], "")
    cases["evaluate/missing_synthetic"] = (lambda: ["evaluate", "--real", tmp / "r", "--synthetic", tmp / "s", "--out", out], "")
    def bad_weights():
        d = tmp / "pairs2"; write_nifti(d / "imagesTr" / "a_0000.nii.gz", PH.astype(np.float32)); write_nifti(d / "labelsTr" / "a.nii.gz", LB)
        (tmp / "w.pth").write_bytes(b"not weights")
        return ["evaluate", "--real", d, "--synthetic", d, "--out", out, "--medicalnet-weights", tmp / "w.pth"]
    cases["evaluate/bad_weights"] = (bad_weights, "")
    return cases

CORPUS = sorted(_corpus_cases(Path("/nonexistent")).keys())

def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30

@pytest.mark.parametrize("name", CORPUS)
def test_bad_input_corpus(name, tmp_path, capsys):
    make, expected = _corpus_cases(tmp_path)[name]
    argv = [str(a) for a in make()]
    if argv[0] != "presets": argv.append("--quiet")                       # progress bars also go to stderr
    before = set(tmp_path.rglob("*"))
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("tof3dgan: error: ") and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned").exists()
    assert not [p for p in set(tmp_path.rglob("*")) - before if ".partial-" in p.name or p.name.endswith(".tmp")]
