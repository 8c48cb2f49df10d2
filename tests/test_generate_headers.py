"No leakage through files: what `generate` and `export` write carries no description, file name, affine or date copied from the training data."
import gzip, json, os, struct
from pathlib import Path
import numpy as np
import nibabel as nib
import pytest
from conftest import tiny_dataset

TOKENS = ("DOE", "JOHN", "19570314", "1957-03-14", "MRN4711", "CHARITE")     # identifying text planted in the training files
TRAIN_MTIME = 946_598_400                                                    # 1999-12-31: the training files' date
OBLIQUE = np.array([[0.49, -0.087, 0.0, -91.3], [0.087, 0.49, 0.0, -125.7], [0.0, 0.0, 0.7, -71.9], [0, 0, 0, 1]])

def _write_identifying(path: Path, arr: np.ndarray) -> None:
    "A NIfTI whose header, extension, affine, gzip member name and dates all identify a patient."
    img = nib.Nifti1Image(arr, OBLIQUE)
    h = img.header
    h["descrip"] = b"DOE^JOHN 1957-03-14 MRN4711"; h["aux_file"] = b"DOE_JOHN.img"
    h["intent_name"] = b"CHARITE"; h["db_name"] = b"MRN4711"
    h.extensions.append(nib.nifti1.Nifti1Extension(6, b"patient JOHN DOE born 19570314, CHARITE"))
    img.set_qform(OBLIQUE, code=1); img.set_sform(OBLIQUE, code=2)
    raw = img.to_bytes()
    with open(path, "wb") as f, gzip.GzipFile(filename="DOE_JOHN_19570314.nii", mode="wb", fileobj=f, mtime=TRAIN_MTIME) as gz:
        gz.write(raw)
    os.utime(path, (TRAIN_MTIME, TRAIN_MTIME))

def _gzip_header(path: Path) -> dict:
    "MTIME and FNAME of a gzip file's first member (RFC 1952)."
    b = Path(path).read_bytes()
    assert b[:2] == b"\x1f\x8b"
    flags, mtime = b[3], struct.unpack("<I", b[4:8])[0]
    name, i = b"", 10
    if flags & 4: i += 2 + struct.unpack("<H", b[10:12])[0]
    if flags & 8: name = b[i:b.index(b"\0", i)]
    return {"mtime": mtime, "fname": name.decode("latin-1")}

def leaks(path: Path, spacing=(0.5, 0.5, 0.7)) -> list:
    "What a generated NIfTI file carries from the training data: [] when nothing."
    out = []
    img = nib.load(str(path)); h = img.header
    for field in ("descrip", "aux_file", "intent_name", "db_name"):
        v = bytes(np.asarray(h[field]).tobytes()).rstrip(b"\0").decode("latin-1")
        if any(t in v.upper() for t in TOKENS): out.append(f"{field}={v!r}")
    if len(h.extensions): out.append(f"{len(h.extensions)} header extension(s)")
    if not np.allclose(img.affine, np.diag([*spacing, 1.0])): out.append(f"affine {img.affine.round(3).tolist()}")
    for which, form in (("qform", img.get_qform()), ("sform", img.get_sform())):
        if not np.allclose(form, np.diag([*spacing, 1.0])): out.append(f"{which} {form.round(3).tolist()}")
    gz = _gzip_header(path)
    if any(t in gz["fname"].upper() for t in TOKENS): out.append(f"gzip name {gz['fname']!r}")
    if gz["mtime"] == TRAIN_MTIME: out.append("gzip date copied from the training file")
    if Path(path).stat().st_mtime == TRAIN_MTIME: out.append("file date copied from the training file")
    body = gzip.decompress(Path(path).read_bytes()).upper()
    out += [f"bytes contain {t!r}" for t in TOKENS if t.encode() in body]
    return out

def test_the_leak_checker_catches_a_file_that_copies_the_training_header(tmp_path):
    "Negative control: a synthetic file written with the training image's header is caught on every count."
    src = tmp_path / "t.nii.gz"
    _write_identifying(src, np.zeros((16, 16, 8), np.float32))
    t = nib.load(str(src))
    bad = nib.Nifti1Image(np.ones((16, 16, 8), np.uint8), t.affine, t.header.copy())
    nib.save(bad, str(tmp_path / "bad.nii.gz"))
    found = " | ".join(leaks(tmp_path / "bad.nii.gz"))
    for what in ("descrip=", "aux_file=", "intent_name=", "db_name=", "extension", "affine", "qform", "sform", "bytes contain"):
        assert what in found, (what, found)
    assert "gzip date" in " | ".join(leaks(src)) and "gzip name" in " | ".join(leaks(src))

@pytest.fixture(scope="module")
def identifying_run(tmp_path_factory):
    "A quick GAN trained (1 epoch) on a patch store prepared from cases whose files identify a patient."
    from tof3dgan.data.store import PatchSpec, PrepareConfig, prepare, load_pairs
    from tof3dgan.core import get_preset
    from tof3dgan.train import Trainer
    root = tmp_path_factory.mktemp("hdr")
    raw = tiny_dataset(root / "plain", n=3, shape=(48, 56, 24), seed=0)
    ident = root / "DOE_JOHN_19570314_CHARITE"
    for sub in ("imagesTr", "labelsTr"): (ident / sub).mkdir(parents=True)
    for i, p in enumerate(sorted((raw / "imagesTr").glob("*.nii.gz"))):
        case = p.name[: -len("_0000.nii.gz")]
        _write_identifying(ident / "imagesTr" / f"DOE_JOHN_{i}_0000.nii.gz", np.asarray(nib.load(str(p)).dataobj, np.float32))
        _write_identifying(ident / "labelsTr" / f"DOE_JOHN_{i}.nii.gz",
                           np.asarray(nib.load(str(raw / "labelsTr" / f"{case}.nii.gz")).dataobj, np.uint8))
    (ident / "dataset.json").write_text(json.dumps({"channel_names": {"0": "TOF"}, "labels": {"background": 0, "vessel": 1},
                                                    "numTraining": 3, "file_ending": ".nii.gz", "name": "DOE JOHN CHARITE"}))
    cfg = get_preset("quick", epochs=1)
    prepare(ident, root / "store", PrepareConfig(spec=PatchSpec(patch=cfg.patch, n_random=4, n_seg=2), n4=False, denoise="none"),
            progress=False)
    Trainer(cfg, load_pairs(root / "store", cfg, progress=False), root / "run", progress=False, tensorboard=False).fit()
    return root

def test_generated_niftis_carry_nothing_from_identifying_training_files(identifying_run, tmp_path):
    from tof3dgan.generate import generate
    store = json.loads((identifying_run / "store" / "index.json").read_text())
    assert any("DOE" in c for c in store["cases"]), "the training data must really identify someone for this test to mean anything"
    out = generate(identifying_run / "run" / "checkpoint.pt", 4, tmp_path / "syn", progress=False)
    files = sorted(out.rglob("*.nii.gz"))
    assert len(files) == 8
    for f in files:
        assert leaks(f) == [], (f.name, leaks(f))
        assert nib.load(str(f)).header["descrip"].tobytes().rstrip(b"\0") == b"tof3dgan synthetic"
    for f in out.glob("*.json"):                                        # dataset.json, generation.json, run.json
        text = f.read_text().upper()
        assert not [t for t in TOKENS if t in text], (f.name, [t for t in TOKENS if t in text])

def test_exported_generator_file_carries_nothing_identifying(identifying_run, tmp_path):
    from tof3dgan.checkpoint import export_generator
    p = export_generator(identifying_run / "run" / "checkpoint.pt", tmp_path / "g.safetensors")
    body = p.read_bytes().upper()
    assert not [t for t in TOKENS if t.encode() in body]
