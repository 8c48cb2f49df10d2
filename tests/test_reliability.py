"Issue 6: crash safety, safe loading, numerical and resource faults, the bad-input corpus, run records."
import errno, json, os, random, signal, subprocess, sys
from pathlib import Path
import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import AFF, assert_one_line_error, run_cli, write_nifti
from tof3dgan import cli
from tof3dgan.checkpoint import export_generator, latest_valid, load_checkpoint, verify_checkpoint
from tof3dgan.core import TofError, get_preset
from tof3dgan.train import Trainer
from tof3dgan.data.store import load_pairs

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TRAIN = ["train", "--preset", "quick", "--epochs", "6", "--n-train", "48", "--quiet"]

# `tof3dgan ARGS` in a subprocess that SIGKILLs itself at a chosen point of the run (env KILL), so each kill lands at
# the same place on a fast or a loaded machine:
#   load   while the training pairs are made (before the run folder exists)
#   step:N when the run has completed N steps (global count, also after a resume)
#   save:E after epoch E's checkpoint was written to its temporary file, before it is renamed into place
#   link:E after checkpoint.pt's replacement was hard-linked to epoch E's file, before the rename that swaps it in
KILLER = """
import os, signal, sys
import torch, tof3dgan.train as T, tof3dgan.data.store as S
where, n = (os.environ["KILL"].split(":") + ["0"])[:2]; n = int(n)
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if where == "load": S.load_pairs = die
elif where == "step":
    step = T.Trainer.train_step
    T.Trainer.train_step = lambda self, *a, **k: die() if self.step == n else step(self, *a, **k)
elif where == "save":
    save = torch.save
    def torch_save(obj, f, *a, **k):
        save(obj, f, *a, **k)
        if isinstance(obj, dict) and obj.get("epoch") == n: die()
    torch.save = torch_save
elif where == "link":
    link = os.link
    def os_link(src, dst, *a, **k):
        link(src, dst, *a, **k)
        if str(src).endswith(f"epoch_{n:04d}.pt"): die()
    os.link = os_link
from tof3dgan.cli import main
sys.exit(main())
"""

def _run_killed(args, kill):
    return subprocess.run([sys.executable, "-c", KILLER, *map(str, args)], env={**ENV, "KILL": kill}, capture_output=True,
                          text=True, timeout=300)

def test_sigkills_anywhere_always_resume_to_identical_weights(tmp_path):
    "A job requeued with the same `--resume` command line after SIGKILLs at every kind of point ends bit-identical."
    run_cli(*TRAIN, "--out", tmp_path / "full", check=True)                    # 6 epochs of 24 steps
    out, rng = tmp_path / "killed", random.Random(1)
    def done():                                                                  # the epoch a resume continues from
        best = latest_valid(out / "checkpoints")[0]
        return load_checkpoint(best)["epoch"] if best else 0
    plan = [lambda e: "load", lambda e: "step:0", lambda e: "save:1",             # all before the first checkpoint
            lambda e: f"step:{24 * e + rng.randrange(25, 48)}", lambda e: f"link:{e + 1}", lambda e: f"save:{e + 1}",
            lambda e: f"step:{24 * e + rng.randrange(25, 48)}"]                    # a step inside the epoch after next
    kills = []
    for when in plan:
        kill = when(done())
        p = _run_killed(TRAIN + ["--out", out, "--resume"], kill)
        assert p.returncode == -signal.SIGKILL, (kill, p.returncode, p.stderr[-2000:])
        assert not (out / "checkpoint.pt").exists() or verify_checkpoint(out / "checkpoint.pt")[0], kill   # usable at every instant
        kills.append((kill, done()))
    assert [e for _, e in kills] == [0, 0, 0, 1, 2, 2, 3], kills               # epoch each kill left to resume from
    r = run_cli(*TRAIN, "--out", out, "--resume", check=True)
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 6 and a["step"] == b["step"] == 144
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"]) and all(torch.equal(a["D"][k], b["D"][k]) for k in a["D"])
    for opt in ("opt_g", "opt_d"):                                              # Adam moments too
        sa, sb = a[opt]["state"], b[opt]["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]
    assert strip(a["history"]) == strip(b["history"])
    assert len(list((out / "checkpoints").glob("epoch_*.pt"))) == 3          # keep_last
    assert all(verify_checkpoint(p)[0] for p in (out / "checkpoints").glob("epoch_*.pt"))
    assert not [p for p in out.rglob(".*") if p.is_file()]                    # no temporary or link files left behind

def test_resume_before_the_first_checkpoint_starts_the_run(tmp_path):
    "Issue 11.5: `--resume` on a run folder without a checkpoint starts the run, unless the folder records other settings."
    r = _run_killed(TRAIN + ["--out", tmp_path / "a", "--epochs", "2"], "step:3")   # killed before its first checkpoint
    assert r.returncode == -signal.SIGKILL and (tmp_path / "a" / "config.json").exists()
    assert latest_valid(tmp_path / "a" / "checkpoints")[0] is None
    r = run_cli(*TRAIN, "--out", tmp_path / "a", "--epochs", "2", "--resume", check=True)
    assert f"no checkpoint in {tmp_path / 'a'} yet: starting the run from epoch 0" in r.stdout
    assert load_checkpoint(tmp_path / "a" / "checkpoint.pt")["epoch"] == 2
    r = _run_killed(TRAIN + ["--out", tmp_path / "b", "--epochs", "2"], "step:3")
    r = run_cli(*TRAIN, "--out", tmp_path / "b", "--epochs", "2", "--width", "32", "--resume")
    assert r.returncode == 2 and "config.json was written for other settings (width 16, now 32)" in r.stderr, r.stderr
    assert not (tmp_path / "b" / "checkpoints").exists()

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
    # issue 11: degenerate images (all zero crashed with an IndexError) and a user's empty brain mask
    "all_zero_image": (dict(image=_arr(np.zeros_like(PH))), "bad_0000.nii.gz is constant (every voxel is 0)"),
    "constant_image": (dict(image=_arr(np.full_like(PH, 7.0))), "bad_0000.nii.gz is constant (every voxel is 7)"),
    "no_foreground": (dict(image=_arr(np.where(np.arange(PH.size).reshape(PH.shape) == 99, 50.0, 0.0).astype(np.float32))),
                      "bad_0000.nii.gz has no foreground"),
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
    # issue 11: dataset.json, nnU-Net naming, --skip-bad leaving nothing, headers claiming terabytes, empty brain masks
    def dsjson(text, name):
        def make():
            ds = _dataset(tmp / name); (ds / "dataset.json").write_text(text); return ["prepare", ds, out]
        return make
    cases["prepare/dataset_json_invalid"] = (dsjson('{"numTraining": 2,, }', "dsj1"), "dataset.json is not valid JSON (")
    cases["prepare/dataset_json_not_an_object"] = (dsjson('[1, 2]', "dsj2"), "dataset.json is not a JSON object")
    cases["prepare/dataset_json_bad_file_ending"] = (dsjson('{"file_ending": ".png"}', "dsj3"), "file_ending '.png'")
    cases["prepare/dataset_json_bad_labels"] = (dsjson('{"labels": {"vessel": 1}}', "dsj4"), "must map background to 0")
    cases["prepare/dataset_json_no_channel_0"] = (dsjson('{"channel_names": {"1": "T1"}}', "dsj5"), 'no channel "0"')
    def no_0000():
        ds = _dataset(tmp / "no0000")
        for p in (ds / "imagesTr").iterdir(): p.rename(p.with_name(p.name.replace("_0000", "")))
        return ["prepare", ds, out]
    cases["prepare/images_without_0000"] = (no_0000, "none named <case>_0000.nii.gz")
    def all_bad():
        ds = _dataset(tmp / "allbad", image=_arr(np.full_like(PH, np.nan)))
        write_nifti(ds / "imagesTr" / "good_0000.nii.gz", np.zeros_like(PH))
        return ["prepare", ds, out, "--skip-bad"]
    cases["prepare/skip_bad_leaves_nothing"] = (all_bad, "Every case in")
    def huge_header():                                       # uncompressed: the reader would try to allocate 108 TB
        ds = _dataset(tmp / "huge"); (ds / "imagesTr" / "bad_0000.nii.gz").unlink()
        _absurd_header(ds / "imagesTr" / "bad_0000.nii"); return ["prepare", ds, out]
    cases["prepare/absurd_header_uncompressed"] = (huge_header, "more than the file holds")
    def empty_brain():
        ds = _dataset(tmp / "brain"); write_nifti(ds / "brainmasksTr" / "bad.nii.gz", np.zeros_like(LB)); return ["prepare", ds, out]
    cases["prepare/empty_brain_mask"] = (empty_brain, "brainmasksTr/bad.nii.gz is empty")
    cases["train/unknown_preset"] = (lambda: ["train", "--preset", "paper_xl", "--out", out], "Unknown preset")
    cases["train/missing_data"] = (lambda: ["train", "--preset", "quick", "--data", tmp / "nodata", "--out", out], "is not a folder")
    def wrongpatch():
        d = tmp / "pairs"; write_nifti(d / "imagesTr" / "a_0000.nii.gz", PH); write_nifti(d / "labelsTr" / "a.nii.gz", LB)
        return ["train", "--preset", "quick", "--data", d, "--out", out]
    cases["train/wrong_patch_size"] = (wrongpatch, "trains on (16, 16, 8) patches")
    def raw_scans():                                          # issue 11: say which command cuts patches
        ds = _dataset(tmp / "scans"); return ["train", "--preset", "quick", "--data", ds, "--out", out]
    cases["train/raw_scans_need_prepare"] = (raw_scans, "cut patches first with `tof3dgan prepare")
    # (train --resume on a folder without a checkpoint now starts the run: commit 7750e24, no longer a bad input)
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
    assert_one_line_error(argv, tmp_path, capsys, expected, must_not_exist=("out", "pwned"))
