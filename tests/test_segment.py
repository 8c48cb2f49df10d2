"Issue 13: the downstream U-Net (train, sliding-window predict, score), its CLI and bad inputs, the nnU-Net hand-off, the shipped generator."
import json, os, pickle, shutil
from pathlib import Path
import numpy as np
import nibabel as nib
import pytest
import torch
from conftest import AFF, SHARED, assert_one_line_error, random_pairs, run_cli, tiny_dataset, write_nifti, write_pairs
from tof3dgan import cli
from tof3dgan.core import TofError
from tof3dgan.data.store import PatchSpec, PrepareConfig, prepare
from tof3dgan.metrics.seg import score_cases, seg_scores
from tof3dgan.segment.unet import build_unet, seg_preset
from tof3dgan.segment.train import SegPairs, SegTrainer, load_unet, patch_dice, train_unet, val_subset
from tof3dgan.segment.predict import predict, predict_volume
from tof3dgan.segment.score import score_predictions

# ---------------------------------------------------------------- fixtures: a small store, a test folder
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    "A patch store of 5 phantom heads (3 train, 1 val, 1 test) with 16x16x8 patches and saved volumes."
    root = tmp_path_factory.mktemp("segstore")
    spec = PatchSpec(patch=(16, 16, 8), n_random=4, n_seg=16, seed=0)
    prepare(tiny_dataset(root / "raw", n=5, shape=(40, 48, 24)), root / "store",
            PrepareConfig(spec=spec, n4=False, denoise="none", spacing=None, splits=(0.6, 0.2, 0.2)), progress=False)
    return root / "store"

@pytest.fixture(scope="module")
def unet_run(store, tmp_path_factory):
    "A finished quick U-Net run on the store."
    out = tmp_path_factory.mktemp("unet") / "run"
    train_unet(seg_preset("quick"), [store], store, out, progress=False)
    return out

def _test_folder(root, n=2, shape=(32, 40, 16), seed=20, brain=True):
    "An nnU-Net-style test folder (imagesTs/, labelsTs/, brainmasksTs/) of phantom heads."
    from tof3dgan.phantom import make_phantom
    for k in range(n):
        ph = make_phantom(shape, seed=seed + k)
        write_nifti(root / "imagesTs" / f"t{k}_0000.nii.gz", ph.image.astype(np.float32))
        write_nifti(root / "labelsTs" / f"t{k}.nii.gz", ph.label)
        if brain: write_nifti(root / "brainmasksTs" / f"t{k}.nii.gz", ph.brain)
    return root

# ---------------------------------------------------------------- the U-Net learns
def test_unet_learns_a_trivial_phantom_in_seconds(tmp_path):
    "Bright labelled voxels in noise: 30 steps lift the validation DSC far above the untrained net's."
    write_pairs(random_pairs(32, 0, (16, 16, 8)), tmp_path / "train")
    write_pairs(random_pairs(8, 1, (16, 16, 8)), tmp_path / "val")
    cfg = seg_preset("quick", epochs=3, steps_per_epoch=10, lr=1e-2, patience=3)
    tr = SegTrainer(cfg, [tmp_path / "train"], tmp_path / "val", tmp_path / "run", progress=False)
    before = patch_dice(tr.model, tr.val, val_subset(len(tr.val), 0))["dsc"]
    tr.fit()
    assert tr.best["dsc"] > before + 0.3 and tr.best["dsc"] > 0.6, (before, tr.history)
    model, _, info = load_unet(tmp_path / "run", device="cpu")                   # best.pt holds the best epoch
    assert patch_dice(model, tr.val, val_subset(len(tr.val), 0))["dsc"] == pytest.approx(tr.best["dsc"])
    assert info["best"]["epoch"] == tr.best["epoch"]

def test_resume_continues_exactly(store, tmp_path):
    "One epoch, stop, resume for the second: the same weights as two epochs in one go."
    cfg = seg_preset("quick", patience=5)
    full = train_unet(cfg, [store], store, tmp_path / "full", progress=False)
    SegTrainer(cfg, [store], store, tmp_path / "cut", progress=False).fit(epochs=1)
    part = train_unet(cfg, [store], store, tmp_path / "cut", resume=True, progress=False)
    assert part.step == full.step and part.epoch == 2
    for (k, a), b in zip(full.model.state_dict().items(), part.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["val_dsc"] for h in full.history] == [h["val_dsc"] for h in part.history]
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["resumed_from"].endswith("epoch_0001.pt")

def test_early_stopping_keeps_the_best_epoch(store, tmp_path, monkeypatch):
    "Validation that never improves after epoch 1 stops the run after `patience` epochs; best.pt stays at epoch 1."
    import tof3dgan.segment.train as T
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1])
    monkeypatch.setattr(T, "patch_dice", lambda *a, **k: {"dsc": next(scores), "per_case": {}})
    tr = train_unet(seg_preset("quick", epochs=10, patience=2), [store], store, tmp_path / "r", progress=False)
    assert tr.stopped and tr.epoch == 3 and tr.best == {"dsc": 0.5, "epoch": 1}
    assert load_unet(tmp_path / "r", "cpu")[2]["epoch"] == 1
    assert [r["val_dsc"] for r in tr.history] == [0.5, 0.4, 0.3]

def test_early_stopping_waits_for_min_epochs(store, tmp_path, monkeypatch):
    "A lucky first epoch does not end the run before `min_epochs` (it did with patience alone: a U-Net stopped at 5 epochs)."
    import tof3dgan.segment.train as T
    scores = iter([0.6, 0.2, 0.3, 0.4, 0.7, 0.65, 0.6, 0.5, 0.4, 0.3])
    monkeypatch.setattr(T, "patch_dice", lambda *a, **k: {"dsc": next(scores), "per_case": {}})
    tr = train_unet(seg_preset("quick", epochs=10, patience=2, min_epochs=5), [store], store, tmp_path / "r", progress=False)
    assert tr.best == {"dsc": 0.7, "epoch": 5} and tr.stopped and tr.epoch == 7      # without min_epochs: stopped at 3, best 0.6

def test_mixed_sources_and_the_input_normalisation(store, tmp_path):
    "Real + synthetic pairs in one set; a NIfTI pair on any intensity scale is re-encoded per patch like the store's."
    from tof3dgan.data.store import PatchStore
    st = PatchStore(store, "seg_train")
    pairs = st[np.arange(6)]
    write_pairs(pairs, tmp_path / "syn")                                  # 0-255 uint8, as `generate` writes them
    mix = SegPairs([store, tmp_path / "syn"], progress=False)
    assert len(mix) == len(st) + 6 and mix.cases[-1].startswith("1:")
    assert np.array_equal(mix.uint8(np.arange(len(st), len(st) + 6)), st.uint8(np.arange(6)))

# ---------------------------------------------------------------- whole-volume inference
def test_sliding_window_output_has_the_inputs_shape_and_affine(unet_run, tmp_path):
    "Probability and mask on the input's grid: shape, affine (also an oblique, flipped one), and a volume smaller than a window."
    img = np.random.default_rng(0).random((37, 29, 13)).astype(np.float32)
    aff = np.array([[-0.5, 0.02, 0, 10], [0.01, 0.5, 0, -5], [0, 0, 0.7, 3], [0, 0, 0, 1]])
    write_nifti(tmp_path / "in" / "a.nii.gz", img, aff)
    write_nifti(tmp_path / "in" / "b.nii.gz", img[:9, :7, :5], AFF)
    out = predict(tmp_path / "in", tmp_path / "pred", checkpoint=unet_run, device="cpu", progress=False)
    for c, shape, ref in (("a", img.shape, aff), ("b", (9, 7, 5), AFF)):
        for kind in ("prob", "mask"):
            f = nib.load(out / f"{c}_{kind}.nii.gz")
            assert f.shape == shape and np.allclose(f.affine, ref, atol=1e-5), (c, kind, f.affine)
        p = np.asanyarray(nib.load(out / f"{c}_prob.nii.gz").dataobj)
        m = np.asanyarray(nib.load(out / f"{c}_mask.nii.gz").dataobj)
        assert 0 <= p.min() and p.max() <= 1 and np.array_equal(m, (p > 0.5).astype(np.uint8))
    pj = json.loads((out / "predictions.json").read_text())
    assert pj["segmenter"] == "unet" and len(pj["cases"]) == 2 and pj["patch"] == [16, 16, 8]

def test_predict_matches_predict_volume_and_reads_a_store(store, unet_run, tmp_path):
    "The store's test split is segmented; the written probabilities are predict_volume's on the canonical image."
    out = predict(store, tmp_path / "p", checkpoint=unet_run, device="cpu", progress=False)
    case = json.loads((store / "index.json").read_text())["splits"]["test"][0]
    model, cfg, info = load_unet(unet_run, "cpu")
    img = nib.load(store / "volumes" / f"{case}_image.nii.gz").get_fdata(dtype=np.float32)
    ref = predict_volume(model, img, info["patch"], cfg.overlap, cfg.sw_batch)
    assert np.allclose(np.asanyarray(nib.load(out / f"{case}_prob.nii.gz").dataobj), ref, atol=1e-6)

def test_window_contrast_floor_from_the_training_patients(store, unet_run, tmp_path):
    "calibrate_contrast: a fraction in (0, 1) from the store's training patches; predict records it and it changes only faint windows."
    from tof3dgan.segment.predict import calibrate_contrast
    f = calibrate_contrast(store, progress=False)
    assert 0 < f < 1 and calibrate_contrast(store, q=50, progress=False) >= f
    a = predict(store, tmp_path / "a", checkpoint=unet_run, device="cpu", progress=False, min_contrast=f)
    assert json.loads((a / "predictions.json").read_text())["min_contrast"] == f
    model, cfg, info = load_unet(unet_run, "cpu")
    img = np.zeros((32, 32, 16), np.float32); img[:, :16] = np.random.default_rng(0).random((32, 16, 16)) * 0.05
    img[20:22, 20:30, 4:12] = 1.0                                           # one bright vessel in the right half
    p0 = predict_volume(model, img, info["patch"], min_contrast=0.0)
    p1 = predict_volume(model, img, info["patch"], min_contrast=0.9)
    assert not np.allclose(p0[:12, :12], p1[:12, :12])                      # faint noise-only windows are no longer stretched

# ---------------------------------------------------------------- scores
def test_scores_equal_the_metrics_module_on_known_masks(tmp_path):
    "Hand-made masks with known TP/FP/FN: score_predictions gives metrics.seg's numbers, DSC exactly 2TP/(2TP+FP+FN)."
    g = np.zeros((20, 20, 10), np.uint8); g[5:15, 8:10, 2:8] = 1                      # 120 voxels
    p = np.zeros_like(g); p[5:15, 9:11, 2:8] = 1                                         # 60 TP, 60 FP, 60 FN
    b = np.zeros_like(g); b[:, :, :5] = 1
    write_nifti(tmp_path / "pred" / "k_mask.nii.gz", p); write_nifti(tmp_path / "t" / "labelsTs" / "k.nii.gz", g)
    write_nifti(tmp_path / "t" / "brainmasksTs" / "k.nii.gz", b)
    df = score_predictions(tmp_path / "pred", tmp_path / "t", progress=False).set_index("region")
    assert df.loc["all", "dsc"] == pytest.approx(2 * 60 / (2 * 60 + 60 + 60))
    ref = seg_scores(p, g)
    assert df.loc["all", "bavd"] == pytest.approx(ref.bavd) and df.loc["all", "avd"] == pytest.approx(ref.avd)
    assert df.loc["all", "bavd"] == pytest.approx((60 * 1.0 + 60 * 1.0) / (2 * 120))   # every miss is one voxel away
    sc = score_cases({"k": (tmp_path / "pred" / "k_mask.nii.gz", tmp_path / "t" / "labelsTs" / "k.nii.gz")},
                     brain_masks={"k": tmp_path / "t" / "brainmasksTs" / "k.nii.gz"}, progress=False).iloc[0]
    assert df.loc["intracranial", "dsc"] == pytest.approx(sc.dsc) and df.loc["intracranial", "bavd"] == pytest.approx(sc.bavd)

def test_brain_mask_removes_out_of_mask_voxels_from_both_sides(tmp_path):
    "Errors outside the brain mask (a false positive and a false negative) vanish in the intracranial score only."
    g = np.zeros((24, 24, 12), np.uint8); g[4:20, 10:12, 3:9] = 1
    p = g.copy()
    p[2, 2, 2] = 1                       # FP outside the brain
    g2 = g.copy(); g2[21, 21, 10] = 1    # FN outside the brain (truth has it, prediction not)
    b = np.zeros_like(g); b[3:21, 3:21, 1:10] = 1
    write_nifti(tmp_path / "pred" / "k_mask.nii.gz", p); write_nifti(tmp_path / "t" / "labelsTs" / "k.nii.gz", g2)
    write_nifti(tmp_path / "t" / "brainmasksTs" / "k.nii.gz", b)
    df = score_predictions(tmp_path / "pred", tmp_path / "t", progress=False).set_index("region")
    assert df.loc["all", "dsc"] < 1 and df.loc["all", "n_pred"] == g.sum() + 1 and df.loc["all", "n_gt"] == g.sum() + 1
    assert df.loc["intracranial", "dsc"] == 1.0 and df.loc["intracranial", "bavd"] == 0.0
    assert df.loc["intracranial", "n_pred"] == g.sum() == df.loc["intracranial", "n_gt"]

def test_threshold_floor_is_written_and_scored_like_a_unet(store, tmp_path):
    "The calibrated threshold floor goes through predict and score unchanged, and segments phantoms well."
    from tof3dgan.segment.predict import calibrate_floor
    t = calibrate_floor(store, progress=False)
    assert 0 < t < 1
    predict(store, tmp_path / "floor", threshold=t, progress=False)
    df = score_predictions(tmp_path / "floor", store, progress=False)
    assert set(df.region) == {"all", "intracranial"} and df.dsc.min() > 0.5

# ---------------------------------------------------------------- the CLI
def test_cli_segment_train_predict_score(store, tmp_path):
    r = run_cli("segment", "train", "--data", store, "--out", tmp_path / "u", "--preset", "quick", "--quiet", check=True)
    assert "best validation DSC" in r.stdout and (tmp_path / "u" / "best.pt").is_file()
    r = run_cli("segment", "predict", "--checkpoint", tmp_path / "u", "--input", store, "--out", tmp_path / "p", "--quiet", check=True)
    assert "_mask.nii.gz of 1 volumes" in r.stdout
    run_cli("segment", "predict", "--checkpoint", tmp_path / "u", "--input", store, "--out", tmp_path / "p2", "--min-contrast", store,
            "--quiet", check=True)
    assert 0 < json.loads((tmp_path / "p2" / "predictions.json").read_text())["min_contrast"] < 1
    r = run_cli("segment", "score", "--pred", tmp_path / "p", "--truth", store, "--name", "real", check=True)
    assert "intracranial" in r.stdout and (tmp_path / "p" / "scores.csv").is_file() and (tmp_path / "p" / "summary.csv").is_file()
    r = run_cli("segment", "predict", "--calibrate", store, "--input", store, "--out", tmp_path / "f", "--quiet", check=True)
    assert "threshold floor" in r.stdout

@pytest.mark.parametrize("cmd", ["segment", "segment train", "segment predict", "segment score"])
def test_cli_segment_help_has_examples(cmd, capsys):
    with pytest.raises(SystemExit) as e: cli.main(cmd.split() + ["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "examples:" in out and "tof3dgan segment" in out

# ---------------------------------------------------------------- the bad-input corpus of `segment`
def _seg_store(tmp, name="st", patch=(16, 16, 8), splits=(0.6, 0.2, 0.2), n=5):
    spec = PatchSpec(patch=patch, n_random=2, n_seg=4, seed=0)
    prepare(tiny_dataset(tmp / f"{name}_raw", n=n, shape=(40, 48, 24)), tmp / name,
            PrepareConfig(spec=spec, n4=False, denoise="none", spacing=None, splits=splits), progress=False)
    return tmp / name

def _gan_ckpt(tmp):
    from tof3dgan.checkpoint import save_checkpoint
    return save_checkpoint({"config": {"name": "quick"}, "G": {}, "D": {}, "epoch": 1}, tmp / "gan.pt")

def segment_corpus(tmp):
    "{name: (argv maker, expected text)}: malformed inputs of `tof3dgan segment`, each must end in one sentence, nothing written."
    out = tmp / "out"
    c = {}
    c["segment/train_missing_data"] = (lambda: ["segment", "train", "--data", tmp / "nowhere", "--out", out], "is not a folder")
    c["segment/train_no_data"] = (lambda: ["segment", "train", "--out", out], "No U-Net training data")
    c["segment/train_synthetic_without_val"] = (lambda: ["segment", "train", "--synthetic", write_pairs(random_pairs(4, 0), tmp / "s1"),
                                                         "--out", out], "needs real validation patients")
    c["segment/train_no_val_patients"] = (lambda: ["segment", "train", "--data", _seg_store(tmp, "noval", splits=(0.8, 0.0, 0.2)),
                                                   "--out", out, "--preset", "quick"], "has no validation patients")
    c["segment/train_patch_mismatch"] = (lambda: ["segment", "train", "--data", _seg_store(tmp), "--synthetic",
                                                  write_pairs(random_pairs(4, 0, (32, 32, 16)), tmp / "s2"), "--out", out, "--preset", "quick"],
                                         "different patch sizes")
    c["segment/train_patch_not_divisible"] = (lambda: ["segment", "train", "--synthetic", write_pairs(random_pairs(8, 0, (12, 12, 6)), tmp / "s3"),
                                                       "--val", _seg_store(tmp, "v3", patch=(12, 12, 6)), "--out", out, "--preset", "quick"],
                                              "not divisible by 8")
    c["segment/train_empty_pairs"] = (lambda: [(tmp / "e" / "imagesTr").mkdir(parents=True), (tmp / "e" / "labelsTr").mkdir(),
                                               ["segment", "train", "--synthetic", tmp / "e", "--val", tmp / "e", "--out", out]][-1],
                                      "No images found")
    c["segment/train_unknown_preset"] = (lambda: ["segment", "train", "--data", tmp, "--out", out, "--preset", "huge"], "Unknown U-Net preset")
    c["segment/predict_missing_checkpoint"] = (lambda: ["segment", "predict", "--checkpoint", tmp / "no.pt", "--input", tmp, "--out", out],
                                               "does not exist")
    c["segment/predict_gan_checkpoint"] = (lambda: ["segment", "predict", "--checkpoint", _gan_ckpt(tmp), "--input",
                                                    write_nifti(tmp / "v.nii.gz", np.ones((8, 8, 8), np.float32)), "--out", out],
                                           "not a U-Net checkpoint")
    c["segment/predict_no_segmenter"] = (lambda: ["segment", "predict", "--input", tmp, "--out", out], "either --checkpoint")
    c["segment/predict_missing_input"] = (lambda: ["segment", "predict", "--calibrate", _seg_store(tmp), "--input", tmp / "nothing",
                                                   "--out", out], "does not exist")
    c["segment/predict_empty_folder"] = (lambda: [(tmp / "empty").mkdir(), ["segment", "predict", "--calibrate", _seg_store(tmp),
                                                  "--input", tmp / "empty", "--out", out]][-1], "No volumes found")
    c["segment/predict_4d_volume"] = (lambda: ["segment", "predict", "--calibrate", _seg_store(tmp), "--input",
                                               write_nifti(tmp / "v4" / "a.nii.gz", np.ones((8, 8, 8, 2), np.float32)), "--out", out],
                                      "3D volume")
    c["segment/predict_bad_min_contrast"] = (lambda: ["segment", "predict", "--checkpoint", tmp / "no.pt", "--input", tmp, "--out", out,
                                                      "--min-contrast", "1.5"], "must be in [0, 1)")
    c["segment/predict_store_without_test"] = (lambda: ["segment", "predict", "--calibrate", _seg_store(tmp), "--input",
                                                        _seg_store(tmp, "notest", splits=(0.8, 0.2, 0.0)), "--out", out], "has no test patients")
    def score_case(pred_shape=(20, 20, 10), brain=True, label=True):
        g = np.zeros((20, 20, 10), np.uint8); g[5:15, 8:10, 2:8] = 1
        write_nifti(tmp / "pr" / "k_mask.nii.gz", np.zeros(pred_shape, np.uint8))
        if label: write_nifti(tmp / "tr" / "labelsTs" / "k.nii.gz", g)
        else: (tmp / "tr" / "labelsTs").mkdir(parents=True)
        if brain: write_nifti(tmp / "tr" / "brainmasksTs" / "k.nii.gz", np.ones_like(g))
        return ["segment", "score", "--pred", tmp / "pr", "--truth", tmp / "tr", "--out", out]
    c["segment/score_wrong_shape"] = (lambda: score_case(pred_shape=(20, 20, 9)), "is not on the grid of its label")
    c["segment/score_missing_brain_masks"] = (lambda: score_case(brain=False), "No brain mask for case 'k'")
    c["segment/score_missing_label"] = (lambda: score_case(label=False), "No ground-truth label for case 'k'")
    c["segment/score_empty_predictions"] = (lambda: [(tmp / "pr0").mkdir(), ["segment", "score", "--pred", tmp / "pr0", "--truth", tmp,
                                                                             "--out", out]][-1], "No predictions")
    c["segment/score_brain_mask_folder_missing"] = (lambda: score_case() + ["--brain-masks", tmp / "nobet"], "does not exist")
    return c

SEG_CORPUS = sorted(segment_corpus(Path("/nonexistent")))

@pytest.mark.parametrize("name", SEG_CORPUS)
def test_segment_bad_input_corpus(name, tmp_path, capsys):
    "Each malformed input: exit 2, exactly one line `tof3dgan: error: ...` with the expected words, nothing written."
    make, expected = segment_corpus(tmp_path)[name]
    assert_one_line_error([*make(), "--quiet"], tmp_path, capsys, expected)

# ---------------------------------------------------------------- nnU-Net hand-off
def _generated(quick_run, tmp_path, n=3):
    from tof3dgan.generate import generate
    return generate(quick_run / "checkpoint.pt", n, tmp_path / "Dataset501_tof3dgan", progress=False)

def test_generate_output_follows_nnunet_raw_rules(quick_run, tmp_path):
    """nnU-Net v2's documented raw-dataset rules (documentation/dataset_format.md), checked without nnU-Net:
    dataset.json with channel_names, labels (background 0, consecutive), numTraining, file_ending; imagesTr/<case>_0000
    + labelsTr/<case> with that ending; numTraining = cases; labels integer in the declared set; image and label on one grid."""
    root = _generated(quick_run, tmp_path)
    ds = json.loads((root / "dataset.json").read_text())
    assert {"channel_names", "labels", "numTraining", "file_ending"} <= set(ds)
    assert ds["channel_names"] == {"0": "TOF"} and ds["labels"]["background"] == 0
    assert sorted(ds["labels"].values()) == list(range(len(ds["labels"])))
    end = ds["file_ending"]
    imgs = sorted((root / "imagesTr").iterdir()); labs = sorted((root / "labelsTr").iterdir())
    assert len(imgs) == len(labs) == ds["numTraining"] == 3
    for i, l in zip(imgs, labs):
        assert i.name.endswith("_0000" + end) and l.name == i.name[: -len("_0000" + end)] + end
        a, b = nib.load(i), nib.load(l)
        assert a.shape == b.shape and np.allclose(a.affine, b.affine)
        assert set(np.unique(np.asanyarray(b.dataobj))) <= set(ds["labels"].values())
        assert np.issubdtype(b.get_data_dtype(), np.integer)

def test_generate_output_passes_nnunet_integrity_check(quick_run, tmp_path, capsys):
    "nnU-Net v2's own `verify_dataset_integrity` on a folder written by `generate` (skipped where nnunetv2 is not installed)."
    pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed: its dependencies replace the project's torch pin, so it "
                        "is not in [dev]; run this test in a venv with `pip install nnunetv2 batchgenerators acvl-utils "
                        "dynamic-network-architectures --no-deps` (passed so with nnunetv2 2.8.1 and torch 2.13.0+cpu)")
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    root = _generated(quick_run, tmp_path)
    verify_dataset_integrity(str(root), num_processes=1)                 # raises on any violation
    assert "verify_dataset_integrity Done" in capsys.readouterr().out

# ---------------------------------------------------------------- the shipped generator
def _shipped():
    pre = pytest.importorskip("tof3dgan.pretrained")
    if pre.DEFAULT_MODEL not in pre.list_models(): pytest.skip("no shipped generator in tof3dgan/models/")
    return pre

def test_shipped_generator_loads_without_pickle_and_matches_its_checksum(monkeypatch):
    pre = _shipped()
    card = pre.model_card(pre.DEFAULT_MODEL)
    from tof3dgan.core import sha256_file
    assert sha256_file(pre.model_path(pre.DEFAULT_MODEL, verify=False)) == card["sha256"]
    def no_pickle(*a, **k): raise AssertionError("the shipped generator must load without unpickling anything")
    monkeypatch.setattr(pickle, "load", no_pickle); monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle); monkeypatch.setattr(torch, "load", no_pickle)
    g, cfg = pre.load_model(pre.DEFAULT_MODEL)
    assert {k: v for k, v in cfg.to_dict().items() if k in card["config"]} == card["config"] and type(g).__name__ == "Generator"

def test_shipped_generator_samples_pass_a_topology_check():
    "Labels of shipped-generator samples are vessel-like: not empty, not speckle (few components, most voxels in the largest)."
    from tof3dgan.metrics.topology import vessel_topology
    pre = _shipped()
    g, cfg = pre.load_model(pre.DEFAULT_MODEL)
    bs = pre.model_card(pre.DEFAULT_MODEL).get("sampling", {}).get("batch_size", 8)
    pairs = pre.sample_pairs(g, cfg, 16, seed=0, batch_size=bs)
    topo = [vessel_topology(p[1]) for p in pairs]
    filled = [t for t in topo if t["n_voxels"] > 0]
    assert len(filled) >= 12, [t["n_voxels"] for t in topo]
    frac = np.mean([p[1].mean() for p in pairs])
    assert 0.002 < frac < 0.3, frac
    assert np.median([t["n_components"] for t in filled]) <= 6, [t["n_components"] for t in filled]
    assert np.median([t["largest_fraction"] for t in filled]) >= 0.5, [t["largest_fraction"] for t in filled]
