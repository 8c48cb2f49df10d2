"MedicalNet feature network: official layout, strict loading, clear errors, normalisation, features with provenance."
import numpy as np
import pytest
import torch
from tof3dgan.core import TofError
from tof3dgan.medicalnet import (DEPTHS, MedicalNet, extract_features, feature_info, load_medicalnet, medicalnet,
                                 normalise, official_state_dict, sha256_file)

def _official_keys_resnet10():
    "The official resnet_10 state-dict keys (models/resnet.py, shortcut B), written out independently of our code."
    bn = lambda p: [f"{p}.weight", f"{p}.bias", f"{p}.running_mean", f"{p}.running_var", f"{p}.num_batches_tracked"]
    keys = ["conv1.weight", *bn("bn1")]
    for i in range(1, 5):
        b = f"layer{i}.0"
        keys += [f"{b}.conv1.weight", *bn(f"{b}.bn1"), f"{b}.conv2.weight", *bn(f"{b}.bn2")]
        if i > 1: keys += [f"{b}.downsample.0.weight", *bn(f"{b}.downsample.1")]
    return keys

def test_module_names_match_official_layout():
    assert sorted(medicalnet(10).state_dict()) == sorted(_official_keys_resnet10())

@pytest.mark.parametrize("depth,dim", [(10, 512), (18, 512), (34, 512), (50, 2048)])
def test_output_shapes(depth, dim):
    net = medicalnet(depth, seed=0)
    x = torch.randn(2, 1, 32, 32, 16)
    assert tuple(net(x).shape) == (2, dim)
    assert tuple(net.feature_maps(x).shape) == (2, dim, 4, 4, 2)      # stride 2 (conv1), 2 (maxpool), 2 (layer2) only

def test_strides_dilations_paddings():
    net = medicalnet(10)
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding, net.conv1.bias) == ((7,) * 3, (2,) * 3, (3,) * 3, None)
    assert (net.maxpool.kernel_size, net.maxpool.stride, net.maxpool.padding) == (3, 2, 1)
    assert net.layer2[0].conv1.stride == (2,) * 3 and net.layer2[0].downsample[0].kernel_size == (1,) * 3
    for layer, d in ((net.layer3, 2), (net.layer4, 4)):
        c = layer[0].conv1
        assert c.stride == (1,) * 3 and c.dilation == (d,) * 3 and c.padding == (d,) * 3
    assert net.layer1[0].downsample is None
    b50 = medicalnet(50).layer3[0]
    assert b50.conv2.dilation == (2,) * 3 and b50.conv3.out_channels == 1024

@pytest.mark.parametrize("depth", [10, 50])
def test_strict_loading_of_official_layout(tmp_path, depth):
    ck = official_state_dict(depth, seed=3)
    assert all(k.startswith("module.") for k in ck["state_dict"])
    assert any(k.startswith("module.conv_seg.") for k in ck["state_dict"])
    p = tmp_path / "w.pth"
    torch.save(ck, p)
    net = load_medicalnet(p, depth, sha256=sha256_file(p))
    for k, v in net.state_dict().items():
        assert torch.equal(v, ck["state_dict"][f"module.{k}"]), k
    src = medicalnet(depth, seed=3)                     # the network the random checkpoint was drawn from
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad(): assert torch.allclose(net(x), src(x))
    assert net.weights_sha256 == sha256_file(p) and "sha256" in net.weights and not net.training

def test_missing_num_batches_tracked_is_tolerated(tmp_path):
    ck = official_state_dict(10, seed=1)
    ck["state_dict"] = {k: v for k, v in ck["state_dict"].items() if not k.endswith("num_batches_tracked")}
    torch.save(ck, tmp_path / "old.pth")
    load_medicalnet(tmp_path / "old.pth", 10)

def _one_sentence(e):
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith("."), msg
    return msg

@pytest.mark.parametrize("change,expect", [
    (lambda sd: sd.pop("module.layer1.0.conv1.weight"), "1 missing"),
    (lambda sd: sd.__setitem__("module.fc.weight", torch.zeros(1)), "1 unexpected"),
    (lambda sd: sd.__setitem__("module.conv1.weight", torch.zeros(64, 1, 3, 3, 3)), "1 wrongly shaped"),
])
def test_bad_state_dicts_give_one_sentence(tmp_path, change, expect):
    ck = official_state_dict(10)
    change(ck["state_dict"])
    torch.save(ck, tmp_path / "w.pth")
    with pytest.raises(TofError) as e: load_medicalnet(tmp_path / "w.pth", 10)
    assert expect in _one_sentence(e)

def test_bad_files_give_one_sentence(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(TofError) as e: load_medicalnet(tmp_path / "junk.pth")
    assert "Cannot read" in _one_sentence(e)
    torch.save({"model": {}}, tmp_path / "layout.pth")
    with pytest.raises(TofError) as e: load_medicalnet(tmp_path / "layout.pth")
    assert "not a MedicalNet checkpoint" in _one_sentence(e)
    with pytest.raises(TofError) as e: load_medicalnet(tmp_path / "absent.pth")
    assert "does not exist" in _one_sentence(e)
    torch.save(official_state_dict(10), tmp_path / "w.pth")
    with pytest.raises(TofError) as e: load_medicalnet(tmp_path / "w.pth", sha256="ab" * 32)
    assert "SHA-256" in _one_sentence(e)
    with pytest.raises(TofError) as e: load_medicalnet(tmp_path / "w.pth", depth=50)
    assert "depth 10" in _one_sentence(e)
    with pytest.raises(TofError): MedicalNet(depth=101)

def test_random_init_is_seeded_and_says_so():
    a, b, c = medicalnet(10, 5), medicalnet(10, 5), medicalnet(10, 6)
    assert torch.equal(a.layer4[0].conv2.weight, b.layer4[0].conv2.weight)
    assert not torch.equal(a.layer4[0].conv2.weight, c.layer4[0].conv2.weight)
    info = feature_info(a, "medicalnet", 2)
    assert info["weights"] == "random-init, seed 5" and info["weights_sha256"] is None
    assert "randomly initialised" in info["note"] and info["normalisation"] == "medicalnet"

def test_normalisation_modes():
    img = np.zeros((4, 4, 4)); img[1:3, 1:3, 1:3] = np.arange(1, 9).reshape(2, 2, 2)
    out = normalise(img, "medicalnet", np.random.default_rng(0))
    fg = img[img > 0]
    np.testing.assert_allclose(out[img > 0], (fg - fg.mean()) / fg.std(), rtol=1e-6)       # population sd, as the authors
    np.testing.assert_array_equal(out[img == 0], np.random.default_rng(0).standard_normal(img.shape)[img == 0].astype(np.float32))
    z = normalise(img, "zscore")
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    with pytest.raises(TofError): normalise(img, "nope")

def test_extract_features_deterministic_and_batch_independent():
    net = medicalnet(10, 0)
    imgs = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 8)).astype(np.float32)
    imgs[:, :, :3] = 0
    f1 = extract_features(imgs, net, "medicalnet", batch_size=2, seed=1, progress=False)
    f2 = extract_features(imgs[:, None], net, "medicalnet", batch_size=3, seed=1, progress=False)
    assert f1.shape == (5, 512) and f1.dtype == np.float64
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)
    f3 = extract_features(imgs, net, "zscore", seed=1, progress=False)
    assert not np.allclose(f1, f3)
    with pytest.raises(TofError, match="image channel only"):
        extract_features(np.zeros((2, 2, 16, 16, 8)), net, progress=False)
