import csv, json, os
from pathlib import Path
import nibabel as nib
import numpy as np
import pytest
from conftest import AFF, REAL_SKIP, SHARED, random_pairs, run_cli, tiny_dataset, write_nifti, write_pairs
from tof3dgan.core import TofError, TofWarning, get_preset, real_data_dir, with_warnings
from tof3dgan.data.io import Case, PairSet, find_cases, load_case, read_volume
from tof3dgan.data.store import (PatchSpec, PatchStore, PrepareConfig, case_origins, example_dataset, load_pairs, prepare,
                                 preprocess_case, quantise, raw_to_pairs, split_cases, to_u8)
from tof3dgan.data.preprocess import denoise, n4_correct, noise_sigma, skull_strip
from tof3dgan.patches import crop, grid_starts, minmax_to_unit
from tof3dgan.phantom import make_phantom


@pytest.fixture
def good(tmp_path):
    ph = make_phantom((48, 56, 24), seed=1)
    return write_nifti(tmp_path / "img.nii.gz", ph.image), write_nifti(tmp_path / "lab.nii.gz", ph.label), ph

def _bad_case(tmp_path, good, kind):
    img, lab, ph = good
    if kind == "shape": return Case("c", img, write_nifti(tmp_path / "b.nii.gz", ph.label[:-1]))
    if kind == "affine": return Case("c", img, write_nifti(tmp_path / "b.nii.gz", ph.label, np.diag([0.6, 0.5, 0.7, 1])))
    if kind == "nonbinary": return Case("c", img, write_nifti(tmp_path / "b.nii.gz", ph.label * 0.7 + 0.1))
    if kind == "multiclass": return Case("c", img, write_nifti(tmp_path / "b.nii.gz", (ph.label * 7).astype(np.uint8)))
    if kind == "empty": return Case("c", img, write_nifti(tmp_path / "b.nii.gz", np.zeros_like(ph.label)))
    if kind in ("nan", "inf"):
        x = ph.image.copy(); x[3, 3, 3] = np.nan if kind == "nan" else np.inf
        return Case("c", write_nifti(tmp_path / "b.nii.gz", x), lab)
    if kind == "2d": return Case("c", write_nifti(tmp_path / "b.nii.gz", ph.image[:, :, 0]), lab)
    if kind == "4d": return Case("c", write_nifti(tmp_path / "b.nii.gz", np.stack([ph.image] * 2, -1)), lab)
    if kind == "truncated":
        b = tmp_path / "b.nii.gz"; b.write_bytes(img.read_bytes()[:200]); return Case("c", b, lab)
    if kind == "not_an_image":
        b = tmp_path / "b.nii.gz"; b.write_text("hello"); return Case("c", b, lab)
    if kind == "wrong_type":
        b = tmp_path / "b.png"; b.write_bytes(b"\x89PNG"); return Case("c", b, lab)
    if kind == "all_zero": return Case("c", write_nifti(tmp_path / "b.nii.gz", np.zeros_like(ph.image)), lab)
    if kind == "constant": return Case("c", write_nifti(tmp_path / "b.nii.gz", np.full_like(ph.image, 3.5)), lab)
    if kind == "no_foreground":
        x = np.zeros_like(ph.image); x[:2, :2, :2] = 9; return Case("c", write_nifti(tmp_path / "b.nii.gz", x), lab)
    if kind == "empty_brain_mask": return Case("c", img, lab, write_nifti(tmp_path / "b.nii.gz", np.zeros_like(ph.label)))
    raise ValueError(kind)

@pytest.mark.parametrize("kind,msg", [
    ("shape", "same grid"), ("affine", "affines differ"), ("nonbinary", "--label-threshold"),
    ("multiclass", "--label-classes"), ("empty", "empty"), ("nan", "NaN or infinite"), ("inf", "NaN or infinite"),
    ("2d", "3D volume"), ("4d", "3D volume"), ("truncated", "truncated, corrupt"), ("not_an_image", "truncated, corrupt"),
    ("wrong_type", "not a volume file"), ("all_zero", "is constant"), ("constant", "is constant"),
    ("no_foreground", "has no foreground"), ("empty_brain_mask", "Brain mask .* is empty")])
def test_each_validation_error_names_file_and_fix(tmp_path, good, kind, msg):
    case = _bad_case(tmp_path, good, kind)
    with pytest.raises(TofError, match=msg) as e:
        load_case(case)
    assert "b." in str(e.value) and str(e.value).count(". ") <= 1          # one sentence, naming the bad file

def test_label_classes_merge_multiclass(tmp_path, good):
    img, lab, ph = good
    multi = (ph.label * 7).astype(np.uint8); multi[:5] *= 0; multi[:5][ph.label[:5] == 1] = 3
    d = load_case(Case("c", img, write_nifti(tmp_path / "m.nii.gz", multi)), label_classes=(3, 7))
    assert np.array_equal(d["label"], ph.label == 1)

def test_duplicate_case_names_and_missing_label(tmp_path, good):
    img, lab, ph = good
    p = tmp_path / "cases.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f); w.writerow(["case", "image", "label"]); w.writerows([["a", img, lab], ["a", img, lab]])
    with pytest.raises(TofError, match="appears twice"): find_cases(p)
    (tmp_path / "ds" / "imagesTr").mkdir(parents=True); (tmp_path / "ds" / "labelsTr").mkdir()
    write_nifti(tmp_path / "ds" / "imagesTr" / "x_0000.nii.gz", ph.image)
    with pytest.raises(TofError, match="has no label"): find_cases(tmp_path / "ds")

def test_three_layouts_find_the_same_cases(tmp_path, good):
    img, lab, ph = good
    for n in ("p1", "p2"):
        write_nifti(tmp_path / "nn" / "imagesTr" / f"{n}_0000.nii.gz", ph.image); write_nifti(tmp_path / "nn" / "labelsTr" / f"{n}.nii.gz", ph.label)
        write_nifti(tmp_path / "im" / f"{n}.nii.gz", ph.image); write_nifti(tmp_path / "lb" / f"{n}.nii.gz", ph.label)
    with open(tmp_path / "c.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["case", "image", "label"])
        w.writerows([[n, f"im/{n}.nii.gz", f"lb/{n}.nii.gz"] for n in ("p1", "p2")])
    names = lambda cs: [c.name for c in cs]
    assert names(find_cases(tmp_path / "nn")) == names(find_cases(tmp_path / "im", tmp_path / "lb")) == names(find_cases(tmp_path / "c.csv")) == ["p1", "p2"]

def test_mha_and_nifti_read_to_the_same_ras_array(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    a = np.random.default_rng(0).random((7, 6, 5)).astype(np.float32)
    write_nifti(tmp_path / "a.nii.gz", a, np.diag([-0.5, -0.5, 0.7, 1.0]))          # LPS-ordered axes, like ITK
    s = sitk.GetImageFromArray(a.transpose(2, 1, 0)); s.SetSpacing((0.5, 0.5, 0.7)); sitk.WriteImage(s, str(tmp_path / "a.mha"))
    (n, na), (m, ma) = read_volume(tmp_path / "a.nii.gz"), read_volume(tmp_path / "a.mha")
    assert np.array_equal(n, m) and np.allclose(na[:3, :3], ma[:3, :3])

def test_paper_grid_offsets():
    assert grid_starts(312, 128) == [0, 92, 184] and grid_starts(384, 128) == [0, 128, 256] and grid_starts(127, 64) == [0, 63]
    o = case_origins(np.ones((312, 384, 127), bool), PatchSpec(), "gan", seed=0)
    sysm = sorted(x for x, k in o if k == "systematic")
    assert len(sysm) == 18 and {x[0] for x in sysm} == {0, 92, 184} and {x[1] for x in sysm} == {0, 128, 256} and {x[2] for x in sysm} == {0, 63}
    assert sum(k == "random" for _, k in o) == 32
    assert len(case_origins(np.ones((312, 384, 127), bool), PatchSpec(), "seg", seed=0)) == 250

def test_splits_never_share_a_patient():
    for seed in range(5):
        s = split_cases([f"c{i}" for i in range(20)], (0.6, 0.2, 0.2), seed)
        allp = s["train"] + s["val"] + s["test"]
        assert len(allp) == len(set(allp)) == 20

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    src = tiny_dataset(root / "raw", 4, (64, 72, 32), seed=3)
    cfg = PrepareConfig(spec=PatchSpec(patch=(32, 32, 16), n_random=6, n_seg=8, seed=1), spacing=None, splits=(0.5, 0.25, 0.25))
    idx = prepare(src, root / "store", cfg, progress=False)
    return root, src, cfg, idx

def test_store_round_trip_and_vessel_centres(store):
    root, src, cfg, idx = store
    st = PatchStore(root / "store", "gan_train")
    assert len(st) == idx["stores"]["gan_train"]["n"] == 2 * (len(case_origins(np.ones((64, 72, 32), bool), cfg.spec, "gan", 0)))
    vols = {n: (nib.load(root / "store" / "volumes" / f"{n}_image.nii.gz").get_fdata(dtype=np.float32),
                np.asanyarray(nib.load(root / "store" / "volumes" / f"{n}_label.nii.gz").dataobj)) for n in idx["splits"]["train"]}
    for i, r in enumerate(st.records):
        img, lab = vols[r["case"]]
        x = st[i]
        c, v = crop(img, r["origin"], cfg.spec.patch), st.volumes[r["case"]]
        assert np.abs(x[0] - minmax_to_unit(c)).max() <= 4 * (v["hi"] - v["lo"]) / 65535 / np.ptp(c) + 1e-6   # 16-bit rounding
        assert np.array_equal(x[1], crop(lab, r["origin"], cfg.spec.patch).astype(np.float32))
        if r["kind"] == "random": assert x[1, 16, 16, 8] == 1
    assert {r["case"] for r in st.records} == set(idx["splits"]["train"])
    assert {r["case"] for r in PatchStore(root / "store", "seg_val").records} == set(idx["splits"]["val"])
    assert not set(idx["splits"]["train"]) & set(idx["splits"]["val"] + idx["splits"]["test"])

def test_store_keeps_16_bits_of_each_volume(store):
    "Issue 11.10: the store holds the preprocessed volume as uint16 codes; a pair keeps far more than 256 grey levels."
    root, src, cfg, idx = store
    st = PatchStore(root / "store", "gan_train")
    levels = [len(np.unique(st[i][0])) for i in range(len(st))]
    assert max(levels) > 1000 and len(np.unique(to_u8(st[int(np.argmax(levels))][0]))) <= 256     # uint8 patches kept <= 256
    for n in idx["splits"]["train"]:
        q = np.load(root / "store" / "cases" / f"{n}.img.npy", mmap_mode="r")
        img = nib.load(root / "store" / "volumes" / f"{n}_image.nii.gz").get_fdata(dtype=np.float32)
        assert q.dtype == np.uint16 and q.max() == 65535 and np.array_equal(q, quantise(img)[0])

def test_reading_crops_the_saved_volumes(store):
    "Issue 11.10: every patch is the crop of its case's saved volume (padded with the code of 0 beyond it), in any batch order."
    import torch
    root, src, cfg, idx = store
    outside = False
    for name in ("gan_train", "seg_val"):
        st = PatchStore(root / "store", name)
        order = np.random.default_rng(0).permutation(len(st))
        img, lab = st.raw(order)
        assert img.dtype == np.uint16 and lab.dtype == np.uint8
        for k, i in enumerate(order):
            r, v = st.records[i], st.volumes[st.records[i]["case"]]
            q = np.load(root / "store" / "cases" / f"{r['case']}.img.npy", mmap_mode="r")
            l = np.load(root / "store" / "cases" / f"{r['case']}.lab.npy", mmap_mode="r")
            assert np.array_equal(img[k], crop(q, r["origin"], cfg.spec.patch, fill=v["fill"]))
            assert np.array_equal(lab[k], crop(l, r["origin"], cfg.spec.patch))
        outside |= any(min(r["origin"]) < 0 for r in st.records)
        assert np.array_equal(st[order], raw_to_pairs(img, lab))
        assert np.array_equal(raw_to_pairs(torch.from_numpy(img), torch.from_numpy(lab)).numpy(), st[order])   # the device path
        assert np.array_equal(st.uint8(order[:3]), np.stack([np.stack([to_u8(p[0]), p[1]]) for p in zip(img[:3], lab[:3])]))
    assert outside                                                                  # some patches leave the volume

@pytest.fixture(scope="module")
def overlapping(tmp_path_factory):
    "A store whose patches overlap heavily (as at the paper's settings): 58 + 40 patches of 32x32x16 from 64x72x32 volumes."
    root = tmp_path_factory.mktemp("overlap")
    src = tiny_dataset(root / "raw", 2, (64, 72, 32), seed=4)
    cfg = PrepareConfig(spec=PatchSpec(patch=(32, 32, 16), n_random=6, n_seg=40, seed=2), spacing=None, n4=False, denoise="none",
                        splits=(0.5, 0.5, 0.0))
    return root, src, cfg, prepare(src, root / "store", cfg, progress=False)

def test_16_bit_store_is_smaller_than_uint8_patches(overlapping):
    "Issue 11.10: volumes once + origins take less disk at 16 bits than format 1's uint8 patches written one by one."
    root, src, cfg, idx = overlapping
    vox = int(np.prod(cfg.spec.patch))
    old = sum(s["n"] for s in idx["stores"].values()) * (vox + (vox + 7) // 8)          # format 1: uint8 image + packed label
    new = sum(p.stat().st_size for p in (root / "store" / "cases").iterdir()) + \
          sum(p.stat().st_size for p in (root / "store").glob("*_*.json"))
    assert idx["stores"]["seg_train"]["n"] == 40 and not list((root / "store").glob("*.npy"))
    assert new < 0.6 * old, (new, old)

def test_format_1_store_is_refused_then_rebuilt(overlapping, tmp_path):
    "Issue 11.10: a format-1 store fails with one sentence naming `tof3dgan prepare`; prepare rebuilds it without --overwrite."
    import shutil
    root, src, cfg, idx = overlapping
    old = Path(shutil.copytree(root / "store", tmp_path / "store"))
    shutil.rmtree(old / "cases")
    for name, s in idx["stores"].items():                                        # the format-1 layout of the same sets
        m = json.loads((old / f"{name}.json").read_text())
        (old / f"{name}.json").write_text(json.dumps({k: m[k] for k in ("name", "n", "patch", "records")}))
        np.save(old / f"{name}.img.npy", np.zeros((s["n"], *s["patch"]), np.uint8))
    (old / "index.json").write_text(json.dumps({**idx, "format": "tof3dgan-patch-store-1"}))
    for f in (lambda: PatchStore(old, "gan_train"), lambda: load_pairs(old, get_preset("quick", patch=(32, 32, 16)))):
        with pytest.raises(TofError, match=r"is a patch store in format 1, .*run `tof3dgan prepare` on its input again to rebuild it\.$"):
            f()
    again = prepare(src, old, cfg, progress=False)
    assert again["format"] == "tof3dgan-patch-store-2" and again["fingerprint"] == idx["fingerprint"]
    assert np.array_equal(PatchStore(old, "seg_train")[np.arange(5)], PatchStore(root / "store", "seg_train")[np.arange(5)])
    assert not list(old.glob("*.npy"))

def test_prepare_twice_is_a_no_op(store):
    root, src, cfg, idx = store
    before = {p: p.stat().st_mtime_ns for p in (root / "store").rglob("*")}
    again = prepare(src, root / "store", cfg, progress=False)
    assert again["fingerprint"] == idx["fingerprint"]
    assert {p: p.stat().st_mtime_ns for p in (root / "store").rglob("*")} == before
    with pytest.raises(TofError, match="other inputs or settings"):
        prepare(src, root / "store", PrepareConfig(spec=PatchSpec(patch=(32, 32, 16), n_random=7), spacing=None), progress=False)

def test_cli_prepare_skip_bad_and_train_from_store(tmp_path):
    src = tiny_dataset(tmp_path / "raw", 3, (64, 72, 32), seed=5)
    write_nifti(tmp_path / "raw" / "imagesTr" / "broken_0000.nii.gz", np.full((64, 72, 32), np.nan, np.float32))
    write_nifti(tmp_path / "raw" / "labelsTr" / "broken.nii.gz", np.ones((64, 72, 32), np.uint8))
    args = ["prepare", src, tmp_path / "store", "--patch", "16,16,8", "--n-random", 4, "--n-seg", 4, "--spacing", "keep",
            "--splits", "0.34,0.33,0.33", "--quiet"]
    r = run_cli(*args)
    assert r.returncode == 2 and "broken_0000.nii.gz contains NaN" in r.stderr and not (tmp_path / "store").exists()
    r = run_cli(*args, "--skip-bad", check=True)
    assert "skipped 1 bad case" in r.stdout and "  skipped broken: Image " in r.stdout and "broken_0000.nii.gz contains NaN" in r.stdout
    idx = json.loads((tmp_path / "store" / "index.json").read_text())
    assert idx["skipped"][0]["case"] == "broken" and "broken" not in idx["cases"] and "contains NaN" in idx["skipped"][0]["reason"]
    r = run_cli("train", "--preset", "quick", "--data", tmp_path / "store", "--out", tmp_path / "run", "--epochs", 1, "--quiet", check=True)
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    r = run_cli("train", "--preset", "demo", "--data", tmp_path / "store", "--out", tmp_path / "run2", "--quiet")
    assert r.returncode == 2 and "holds (16, 16, 8) patches" in r.stderr

@pytest.mark.skipif(not (SHARED / "vessel_masks").exists(), reason=REAL_SKIP)
def test_real_vessel_masks_through_prepare(tmp_path):
    masks = sorted((SHARED / "vessel_masks").glob("Normal001-MRA-*.nii.gz"))[:2] + [SHARED / "vessel_masks" / "IXI022-Guys-0701-MRA-STAPLE.nii.gz"]
    src = example_dataset(tmp_path / "raw", masks, n_phantoms=0, crop_to=(96, 96, 48))
    cfg = PrepareConfig(spec=PatchSpec(patch=(32, 32, 16), n_random=8, n_seg=8), spacing=(0.5, 0.5, 0.7), splits=(0.34, 0.33, 0.33))
    idx = prepare(src, tmp_path / "store", cfg, progress=False)
    assert len(idx["cases"]) == 3 and all(c["spacing"] == [0.5, 0.5, 0.7] for c in idx["cases"].values())
    st = PatchStore(tmp_path / "store", "gan_train")
    frac = np.mean([st[i][1].mean() for i in range(len(st))])
    assert 0.002 < frac < 0.3

@pytest.mark.skipif(not (SHARED / "tof_images").exists(), reason=REAL_SKIP)
@pytest.mark.parametrize("name", ["chris_MRA.nii.gz", "topcow_crop_mra.mha"])
def test_preprocessing_on_real_tof(name):
    img, aff = read_volume(SHARED / "tof_images" / name)
    from tof3dgan.data.io import spacing_of
    sp = spacing_of(aff)
    c = tuple(slice(max(0, n // 2 - k // 2), n // 2 + k // 2) for n, k in zip(img.shape, (100, 128, 60)))
    img = img.astype(np.float32)[c]                                 # central crop: NLM on all 200x256x120 takes ~20 s
    out = n4_correct(denoise(img, sp), sp)                          # the authors' order, NLM for Rician noise
    assert out.shape == img.shape and np.isfinite(out).all()
    hi = img > np.percentile(img, 99.5)                        # the brightest voxels (vessels) stay the brightest
    assert out[hi].mean() > 2 * np.median(out[img > np.percentile(img, 50)])
    ratio = np.percentile(out, 99) / np.percentile(img, 99)
    assert 0.3 < ratio < 3                                     # N4 keeps the intensity scale

# ---------------------------------------------------------------- pair sets (data.io.PairSet)
def test_pairset_errors(tmp_path):
    with pytest.raises(TofError, match="not a folder"): PairSet(tmp_path / "absent")
    (tmp_path / "empty" / "imagesTr").mkdir(parents=True)
    with pytest.raises(TofError, match="No images"): PairSet(tmp_path / "empty")
    with pytest.raises(TofError, match=r"\(2, x, y, z\)"): PairSet(np.zeros((3, 1, 8, 8, 4)))
    with pytest.raises(TofError, match="encoding"): PairSet(np.full((2, 2, 8, 8, 4), 200.0))
    bad = random_pairs(2, 0); bad[1, 1, 0, 0, 0] = 0.5
    ps = PairSet(bad)
    with pytest.raises(TofError, match="non-binary values"): ps.label(1)   # the message every pair reader gives
    root = write_pairs(random_pairs(2, 0), tmp_path / "r")
    (root / "labelsTr" / "c001.nii.gz").unlink()
    with pytest.raises(TofError, match="has no label"): PairSet(root)
    ps = PairSet(write_pairs(random_pairs(3, 0), tmp_path / "ok"))
    assert ps.cases == ["c000", "c001", "c002"] and ps.image(0).max() > 1 and ps.label(0).dtype == bool

# ---------------------------------------------------------------- issue 11: real-data locator, NLM and the authors' order, n_train
def test_real_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TOF3DGAN_REAL_DATA", str(tmp_path))
    assert real_data_dir() == tmp_path
    monkeypatch.setenv("TOF3DGAN_REAL_DATA", str(tmp_path / "absent"))
    with pytest.warns(TofWarning, match="TOF3DGAN_REAL_DATA=.*absent is not a folder"):
        assert real_data_dir() is None
    monkeypatch.delenv("TOF3DGAN_REAL_DATA")
    sibling = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
    assert real_data_dir() == (sibling if sibling.is_dir() else None)
    assert "TOF3DGAN_REAL_DATA=" in REAL_SKIP and "vessel_masks/" in REAL_SKIP

def test_nlm_removes_rician_noise_and_its_floor():
    noisy, clean = make_phantom((64, 72, 32), seed=2), make_phantom((64, 72, 32), seed=2, noise=0)
    head, air = noisy.head.astype(bool), noisy.head == 0
    assert abs(noise_sigma(noisy.image) - 0.015) < 0.003              # the phantom's Rician sigma
    out = denoise(noisy.image, noisy.spacing, "nlm")
    err = lambda x: np.sqrt(((x - clean.image)[head] ** 2).mean())
    assert err(out) < 0.8 * err(noisy.image)
    assert out[air].mean() < 0.5 * noisy.image[air].mean()           # the Rician floor of the air is mostly gone
    hi = clean.label.astype(bool)
    assert abs(out[hi].mean() - clean.image[hi].mean()) < 0.05 * clean.image[hi].mean()   # vessels keep their brightness

def test_noise_sigma_ignores_masked_background():
    rng = np.random.default_rng(0)
    x = np.zeros((64, 64, 32), np.float32); x[16:48, 16:48, 8:24] = 10 + rng.normal(0, 2, (32, 32, 16))
    assert abs(noise_sigma(x) - 2) < 0.3                              # the zeroed 7/8 of the volume would give 0

def test_preprocess_runs_in_the_authors_order(tmp_path, monkeypatch):
    import tof3dgan.data.store as st
    calls = []
    monkeypatch.setattr(st, "denoise", lambda img, sp, m: calls.append(("denoise", m)) or img)
    monkeypatch.setattr(st, "n4_correct", lambda img, sp: calls.append(("n4",)) or img)
    monkeypatch.setattr(st, "resample", lambda a, sp, t, o: calls.append(("resample",)) or a)
    ph = make_phantom((48, 56, 24), seed=1)
    case = Case("c", write_nifti(tmp_path / "i.nii.gz", ph.image, np.diag([0.6, 0.6, 0.8, 1])),
                write_nifti(tmp_path / "l.nii.gz", ph.label, np.diag([0.6, 0.6, 0.8, 1])))
    preprocess_case(case, PrepareConfig())
    assert calls == [("resample",), ("resample",), ("denoise", "nlm"), ("n4",)]    # image, label; then NLM before N4
    calls.clear(); preprocess_case(case, PrepareConfig(order=("n4", "denoise"), denoise="curvature_flow"))
    assert calls[-2:] == [("n4",), ("denoise", "curvature_flow")]
    with pytest.raises(TofError, match="order"): PrepareConfig(order=("n4", "n4"))
    with pytest.raises(TofError, match="Unknown denoiser"): PrepareConfig(denoise="bm3d")

def test_store_order_and_warnings_in_index(store):
    root, src, cfg, idx = store
    assert idx["params"]["order"] == ["denoise", "n4"] and idx["params"]["denoise"] == "nlm"
    assert isinstance(idx["warnings"], list) and idx["skipped"] == []

def test_n_train_takes_a_seeded_subset_of_a_store(store, tmp_path):
    from tof3dgan.train import Trainer
    root, src, cfg, idx = store
    full = PatchStore(root / "store", "gan_train")
    gcfg = get_preset("quick", patch=(32, 32, 16), n_train=6, epochs=1, snapshot_n=0)
    info = {}
    sub = load_pairs(root / "store", gcfg, info=info)
    assert isinstance(sub, PatchStore) and len(sub) == 6 and info == {"source": "store", "path": str(root / "store"),
                                                                       "available": len(full), "used": 6}
    assert np.array_equal(sub.indices, load_pairs(root / "store", gcfg).indices)             # seeded
    assert not np.array_equal(sub.indices, load_pairs(root / "store", get_preset("quick", patch=(32, 32, 16), n_train=6, seed=1)).indices)
    assert np.array_equal(sub[np.arange(6)], full[sub.indices]) and sub.records == [full.records[i] for i in sub.indices]
    assert np.array_equal(sub.subset([1, 3]).indices, sub.indices[[1, 3]])
    assert len(load_pairs(root / "store", get_preset("quick", patch=(32, 32, 16), n_train=10**6))) == len(full)
    t = Trainer(gcfg, sub, tmp_path / "run", progress=False)
    t.fit()
    assert t.step == 6 // gcfg.batch_size and json.loads((tmp_path / "run" / "config.json").read_text())["n_train"] == 6

def test_n_train_takes_a_seeded_subset_of_a_folder(tmp_path):
    root = write_pairs(random_pairs(10, 0), tmp_path / "pairs")
    info = {}
    x = load_pairs(root, get_preset("quick", n_train=4), progress=False, info=info)
    assert x.shape == (4, 2, 16, 16, 8) and info["available"] == 10 and info["used"] == 4
