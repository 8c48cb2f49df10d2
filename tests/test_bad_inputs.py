"""Issue 11 A: input that tof3dgan can use but only in part ends in a warning naming what was ignored (the usable half of
the bad-input corpus; the refused half is `CORPUS` in test_reliability.py), and the readers' errors are told apart from
ours."""
import json, warnings
from pathlib import Path
import nibabel as nib
import numpy as np
import pytest
from conftest import write_nifti
from tof3dgan import cli
from tof3dgan.core import TofError, TofWarning
from tof3dgan.data import io
from tof3dgan.data.io import find_cases, read_volume
from tof3dgan.phantom import make_phantom

FAST = ["--spacing", "keep", "--patch", "16,16,8", "--n-random", "2", "--n-seg", "2", "--no-n4", "--denoise", "none", "--quiet"]

def _heads(root, names=("a", "b", "c")):
    "An nnU-Net folder of small phantom heads, one per name."
    for i, n in enumerate(names):
        ph = make_phantom((40, 40, 24), seed=i)
        write_nifti(root / "imagesTr" / f"{n}_0000.nii.gz", ph.image); write_nifti(root / "labelsTr" / f"{n}.nii.gz", ph.label)
    return root

def _ds(text): return lambda r: (r / "dataset.json").write_text(text)
def _mv(a, b): return lambda r: (r / a).rename(r / b)
def _copy(a, b): return lambda r: (r / b).write_bytes((r / a).read_bytes())
def _orphan(r): write_nifti(r / "labelsTr" / "d.nii.gz", np.zeros((40, 40, 24), np.uint8))
def _nan(r): write_nifti(r / "imagesTr" / "c_0000.nii.gz", np.full((40, 40, 24), np.nan, np.float32))
def _drop_label(r): (r / "labelsTr" / "c.nii.gz").unlink()

# name: (change to a good 3-case dataset, extra args, text the warning or summary line must hold, files listed as skipped)
USABLE = {
    "dataset_json_without_nnunet_keys": (_ds('{"author": "me", "notes": "TOF"}'), [], "dataset.json: it has none of nnU-Net's keys", []),
    "dataset_json_numtraining_mismatch": (_ds('{"channel_names": {"0": "TOF"}, "labels": {"background": 0, "vessel": 1}, '
                                              '"numTraining": 5, "file_ending": ".nii.gz"}'), [], "says numTraining 5 but 3 cases found", []),
    "image_without_0000": (_mv("imagesTr/c_0000.nii.gz", "imagesTr/c.nii.gz"), [],
                           "not named as nnU-Net expects, <case>_0000.nii.gz (rename to use): c.nii.gz", ["c.nii.gz", "c.nii.gz"]),
    "orphan_label": (_orphan, [], "without an image (add imagesTr/<case>_0000 or remove it): d.nii.gz", ["d.nii.gz"]),
    "non_0000_channel": (_copy("imagesTr/a_0000.nii.gz", "imagesTr/a_0001.nii.gz"), [],
                         "of other channels in", ["a_0001.nii.gz"]),
    "not_a_volume_in_imagesTr": (lambda r: (r / "imagesTr" / "notes.txt").write_text("scanner notes"), [],
                                 "not in a volume format tof3dgan reads: notes.txt", ["notes.txt"]),
    "skip_bad_lists_each_case": (_nan, ["--skip-bad"], "  skipped c: Image", ["c_0000.nii.gz"]),
    "skip_bad_image_without_label": (_drop_label, ["--skip-bad"], "Ignored 1 image without a label (--skip-bad): c_0000.nii.gz",
                                     ["c_0000.nii.gz"]),
    "two_cases_empty_splits": (lambda r: (_drop_label(r), (r / "imagesTr" / "c_0000.nii.gz").unlink()), [],
                               "the val and test splits are empty", []),
    "patch_larger_than_volume": (lambda r: None, ["--patch", "64,64,32"], "Patch 64x64x32 is larger than the volume of", []),
}

@pytest.mark.parametrize("name", sorted(USABLE))
def test_usable_input_warns_and_records(name, tmp_path, capsys):
    change, extra, expected, skipped = USABLE[name]
    src = _heads(tmp_path / "raw"); change(src)
    code = cli.main(["prepare", str(src), str(tmp_path / "out"), *FAST, *extra])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err, err
    assert expected in out, out                                                # in the printed summary
    idx = json.loads((tmp_path / "out" / "index.json").read_text())
    said = idx["warnings"] + [f"  skipped {s['case']}: {s['reason']}" for s in idx["skipped"] if "case" in s]
    assert any(expected.strip() in w for w in said), said                     # and in the store's index
    assert sorted(Path(s["file"]).name for s in idx["skipped"]) == sorted(skipped)
    assert all(s["reason"] for s in idx["skipped"])
    assert not [p for p in tmp_path.rglob("*") if ".partial-" in p.name or p.name.endswith(".tmp")]

def test_every_usable_kind_is_a_tofwarning_in_the_library(tmp_path):
    src = _heads(tmp_path / "raw"); _mv("imagesTr/c_0000.nii.gz", "imagesTr/c.nii.gz")(src); _orphan(src)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cases = find_cases(src)
    msgs = [str(x.message) for x in w if x.category is TofWarning]
    assert [c.name for c in cases] == ["a", "b"] and len(msgs) == 2 and msgs == cases.warnings

# ---------------------------------------------------------------- the readers' errors, and only theirs, mean "corrupt"
@pytest.fixture
def nifti(tmp_path):
    return write_nifti(tmp_path / "x.nii.gz", np.ones((4, 4, 4), np.float32))

@pytest.mark.parametrize("exc", [MemoryError, TypeError, KeyError])
def test_memory_errors_and_our_bugs_are_not_called_corrupt(nifti, monkeypatch, exc):
    def boom(*a, **k): raise exc("from inside the reader")
    monkeypatch.setattr(io.nib, "load", boom)
    with pytest.raises(exc):
        read_volume(nifti)

@pytest.mark.parametrize("exc", [OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError])
def test_reader_errors_are_called_corrupt(nifti, monkeypatch, exc):
    def boom(*a, **k): raise exc("bad file")
    monkeypatch.setattr(io.nib, "load", boom)
    with pytest.raises(TofError, match=r"x.nii.gz .*truncated, corrupt"):
        read_volume(nifti)

def test_sitk_memory_error_propagates(tmp_path, monkeypatch):
    sitk = pytest.importorskip("SimpleITK")
    p = tmp_path / "x.mha"; sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 4, 4), np.float32)), str(p))
    def boom(*a, **k): raise MemoryError
    monkeypatch.setattr(sitk, "ReadImage", boom)
    with pytest.raises(MemoryError): read_volume(p)
    monkeypatch.setattr(sitk, "ReadImage", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("ITK exception")))
    with pytest.raises(TofError, match="truncated, corrupt"): read_volume(p)

def test_memory_error_in_prepare_is_not_a_skip_bad_skip(tmp_path, monkeypatch):
    "--skip-bad skips bad files, not our out-of-memory: a MemoryError stops the run."
    from tof3dgan.data import store
    src = _heads(tmp_path / "raw")
    real = io.nib.load
    def load(p, *a, **k):
        if "b_0000" in str(p): raise MemoryError
        return real(p, *a, **k)
    monkeypatch.setattr(io.nib, "load", load)
    cfg = store.PrepareConfig(spec=store.PatchSpec(patch=(16, 16, 8), n_random=2, n_seg=2), n4=False, denoise="none",
                              spacing=None, skip_bad=True)
    with pytest.raises(MemoryError): store.prepare(src, tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.partial-*"))
