"generate: per-patch image scaling, batch planning under batch-statistics BatchNorm, fp32 sampling, narrow error handling."
import json
import nibabel as nib
import numpy as np
import pytest
import torch
import tof3dgan.generate as gen
from tof3dgan.core import GANConfig, TofError, get_preset
from tof3dgan.data.store import load_pairs
from tof3dgan.patches import minmax_to_unit, unit_to_u8
from tof3dgan.train import Trainer

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Two briefly trained quick models: one trained in fp32, one in mixed precision (bf16 autocast on a CPU)."
    root, out = tmp_path_factory.mktemp("gen"), {}
    for prec in ("fp32", "mixed"):
        cfg = get_preset("quick", epochs=1, precision=prec)
        Trainer(cfg, load_pairs("phantom", cfg, progress=False), root / prec, progress=False, tensorboard=False).fit()
        out[prec] = root / prec / "checkpoint.pt"
    return out

@pytest.fixture
def spy(monkeypatch):
    "Record every generator forward: batch size, output dtype, the raw output (float32) and the noise."
    calls = []
    real = gen.load_generator
    def load(*a, **k):
        g, cfg = real(*a, **k)
        g.register_forward_hook(lambda m, inp, o: calls.append((inp[0].shape[0], o.dtype, o.detach().float().clone(), inp[0].detach().clone())))
        return g, cfg
    monkeypatch.setattr(gen, "load_generator", load)
    return calls

def _images(out):
    return np.stack([np.asanyarray(nib.load(p).dataobj) for p in sorted((out / "imagesTr").iterdir())])

def _labels(out):
    return np.stack([np.asanyarray(nib.load(p).dataobj) for p in sorted((out / "labelsTr").iterdir())])

def test_default_batch_is_eight_and_no_forward_with_one_sample(runs, spy, tmp_path):
    gen.generate(runs["fp32"], 9, tmp_path / "a", progress=False)
    assert [c[0] for c in spy] == [8, 8]                      # the 9th sample is padded to a batch of 8, not run alone
    g = json.loads((tmp_path / "a" / "generation.json").read_text())
    assert g["batch_size"] == 8 and g["padded_samples"] == 7 and len(list((tmp_path / "a" / "imagesTr").iterdir())) == 9
    spy.clear()
    gen.generate(runs["fp32"], 5, tmp_path / "b", batch_size=2, progress=False)
    assert [c[0] for c in spy] == [2, 2, 2]

def test_batch_of_one_refused_with_batch_statistics_allowed_with_running_statistics(runs, spy, tmp_path):
    with pytest.raises(TofError, match="at least 2"): gen.generate(runs["fp32"], 3, tmp_path / "a", batch_size=1, progress=False)
    assert not (tmp_path / "a").exists() and spy == []
    gen.generate(runs["fp32"], 2, tmp_path / "b", bn="eval", batch_size=1, progress=False)
    assert [c[0] for c in spy] == [1, 1]

def test_first_samples_do_not_depend_on_n(runs, tmp_path):
    gen.generate(runs["fp32"], 8, tmp_path / "n8", progress=False)
    gen.generate(runs["fp32"], 9, tmp_path / "n9", progress=False)
    gen.generate(runs["fp32"], 3, tmp_path / "n3", progress=False)
    a, b, c = _images(tmp_path / "n8"), _images(tmp_path / "n9"), _images(tmp_path / "n3")
    assert np.array_equal(a, b[:8]) and np.array_equal(_labels(tmp_path / "n8"), _labels(tmp_path / "n9")[:8])
    assert np.array_equal(a[:3], c)                          # a padded first batch gives the same samples as a full one

def test_noise_does_not_depend_on_bn_mode(runs, spy, tmp_path):
    gen.generate(runs["fp32"], 3, tmp_path / "t", progress=False)
    gen.generate(runs["fp32"], 3, tmp_path / "e", bn="eval", progress=False)
    (bt, *_, zt), (be, *_, ze) = spy
    assert bt == be == 8 and torch.equal(zt, ze)
    assert not np.array_equal(_images(tmp_path / "t"), _images(tmp_path / "e"))

def test_sampling_is_fp32_by_default_and_precision_on_request(runs, spy, tmp_path):
    gen.generate(runs["mixed"], 2, tmp_path / "a", progress=False)
    assert spy[-1][1] == torch.float32
    assert json.loads((tmp_path / "a" / "generation.json").read_text())["autocast"] == "float32"
    gen.generate(runs["mixed"], 2, tmp_path / "b", precision=None, progress=False)     # the training config's
    assert spy[-1][1] == torch.bfloat16
    assert json.loads((tmp_path / "b" / "generation.json").read_text())["precision"] == "mixed"
    gen.generate(runs["fp32"], 2, tmp_path / "c", precision="bf16", progress=False)
    assert spy[-1][1] == torch.bfloat16
    with pytest.raises(TofError, match="--precision must be one of"):
        gen.generate(runs["fp32"], 2, tmp_path / "d", precision="fp8", progress=False)

def test_minmax_scaling_is_default_and_fixed_on_request(runs, spy, tmp_path):
    gen.generate(runs["fp32"], 4, tmp_path / "mm", progress=False)
    raw = spy[-1][2][:4, 0].numpy()
    imgs = _images(tmp_path / "mm")
    assert imgs.dtype == np.uint8
    for r, im in zip(raw, imgs):
        assert np.array_equal(im, unit_to_u8(minmax_to_unit(r))) and (im.min(), im.max()) == (0, 255)
    assert json.loads((tmp_path / "mm" / "generation.json").read_text())["scaling"] == "minmax"
    gen.generate(runs["fp32"], 4, tmp_path / "fx", scaling="fixed", progress=False)
    assert np.array_equal(_images(tmp_path / "fx"), unit_to_u8(spy[-1][2][:4, 0].numpy()))
    assert json.loads((tmp_path / "fx" / "generation.json").read_text())["scaling"] == "fixed"
    with pytest.raises(TofError, match="--scaling must be one of"):
        gen.generate(runs["fp32"], 2, tmp_path / "x", scaling="zscore", progress=False)

def test_memory_error_is_not_reported_as_a_damaged_file(runs, tmp_path, monkeypatch):
    def boom(cls, d): raise MemoryError()
    monkeypatch.setattr(GANConfig, "from_dict", classmethod(boom))
    with pytest.raises(MemoryError): gen.generate(runs["fp32"], 2, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()

def test_damaged_config_is_one_sentence_naming_the_file(runs, tmp_path):
    for bad in ({"width": "wide"}, {"precision": "fp64"}, ["not", "a", "dict"]):
        ck = torch.load(runs["fp32"], weights_only=True)
        ck["config"] = {**ck["config"], **bad} if isinstance(bad, dict) else bad
        torch.save(ck, tmp_path / "edited.pt")
        with pytest.raises(TofError, match="edited or is damaged") as e:
            gen.generate(tmp_path / "edited.pt", 2, tmp_path / "o", progress=False)
        assert str(tmp_path / "edited.pt") in str(e.value) and "\n" not in str(e.value)
