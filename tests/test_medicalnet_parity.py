"Issue 11 item 14: MedicalNet parity with the official networks (shortcut type per depth, key layout, known checksum) and an independent cross-check against the `medmetric` package (features and FID)."
import numpy as np
import pytest
import torch
from tof3dgan.core import TofError, sha256_file
from tof3dgan.medicalnet import extract_features, load_medicalnet, medicalnet, normalise, official_state_dict

try: from tof3dgan.metrics.fid import fid
except ImportError: from tof3dgan.metrics import fid

# Tencent MedicalNet's training settings (and medmetric's weights manifest): ResNet-10 and -50 use shortcut B
# (1x1x1 conv + BN), ResNet-18 and -34 shortcut A (zero-padded identity, no parameters).
OFFICIAL_SHORTCUT = {10: "B", 18: "A", 34: "A", 50: "B"}
LAYERS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
R10_23DATASET_SHA256 = "afa8055f3e47f4a18239495d92a7abc587902c69c31c743de2b2784653b72605"

def _official_keys(depth):
    "The official backbone's state-dict keys, written out independently of our code."
    bn = lambda p: [f"{p}.weight", f"{p}.bias", f"{p}.running_mean", f"{p}.running_var", f"{p}.num_batches_tracked"]
    keys, n_conv = ["conv1.weight", *bn("bn1")], 3 if depth == 50 else 2
    for i, n in enumerate(LAYERS[depth], 1):
        for j in range(n):
            for c in range(1, n_conv + 1): keys += [f"layer{i}.{j}.conv{c}.weight", *bn(f"layer{i}.{j}.bn{c}")]
        shape_changes = i > 1 or depth == 50                  # stride 2 or more channels; layer1 only for the bottleneck
        if shape_changes and OFFICIAL_SHORTCUT[depth] == "B":
            keys += [f"layer{i}.0.downsample.0.weight", *bn(f"layer{i}.0.downsample.1")]
    return sorted(keys)

@pytest.mark.parametrize("depth", [10, 18, 34, 50])
def test_official_key_layout_per_depth(depth):
    assert sorted(medicalnet(depth).state_dict()) == _official_keys(depth)
    sd = official_state_dict(depth, seed=1)["state_dict"]
    backbone = sorted(k.removeprefix("module.") for k in sd if not k.startswith("module.conv_seg."))
    assert backbone == _official_keys(depth)
    assert (not any("downsample" in k for k in sd)) == (OFFICIAL_SHORTCUT[depth] == "A")

@pytest.mark.parametrize("depth", [18, 34])
def test_shortcut_a_pads_with_zeros(depth):
    "Shortcut A: avg_pool3d(x, 1, stride) (a strided slice), then zeros for the extra channels, as downsample_basic_block."
    net = medicalnet(depth)
    sc = net.layer2[0].downsample
    x = torch.randn(2, 64, 8, 8, 4)
    y = sc(x)
    assert tuple(y.shape) == (2, 128, 4, 4, 2)
    assert torch.equal(y[:, :64], x[:, :, ::2, ::2, ::2]) and not y[:, 64:].any()
    assert list(sc.parameters()) == [] and list(sc.buffers()) == []
    y3 = net.layer3[0].downsample(torch.randn(1, 128, 4, 4, 2))          # stride 1, 128 -> 256 channels
    assert tuple(y3.shape) == (1, 256, 4, 4, 2) and not y3[:, 128:].any()

def _features_of(net, imgs, seed):
    "Our normalisation, done by hand in extract_features' order, as one (n, 1, x, y, z) float32 tensor."
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([normalise(im, "medicalnet", rng) for im in imgs]))[:, None]

@pytest.mark.parametrize("depth", [10, 18, 34, 50])
def test_features_equal_medmetric(tmp_path, depth):
    "Same official-layout state dict, same preprocessed input: our features equal medmetric's (its own ResNet code)."
    pytest.importorskip("medmetric")
    from medmetric.extractors.medicalnet import MedicalNetFeatureExtractor
    from medmetric.hub.medicalnet import get_medicalnet_entry
    entry = get_medicalnet_entry(depth=depth, use_23dataset=True)                # medmetric's manifest: no download
    assert entry.shortcut_type == OFFICIAL_SHORTCUT[depth]
    p = tmp_path / f"r{depth}.pth"
    torch.save(official_state_dict(depth, seed=depth), p)
    theirs = MedicalNetFeatureExtractor(depth=depth, shortcut_type=entry.shortcut_type, layers=list(entry.layers),
                                        block=entry.block, no_cuda=True)
    assert sorted(theirs.model.backbone.state_dict()) == _official_keys(depth)
    theirs.load_pretrained(depth=depth, use_23dataset=True, weights_path=str(p))  # a local file: nothing is downloaded
    ours = load_medicalnet(p, depth)
    imgs = np.random.default_rng(depth).integers(0, 255, (3, 24, 24, 16)).astype(np.float32)
    imgs[:, :6] = 0                                                             # background for the authors' noise
    f_ours = extract_features(imgs, ours, "medicalnet", batch_size=2, seed=5, progress=False)
    with torch.no_grad(): f_theirs = theirs(_features_of(ours, imgs, 5)).double().numpy()
    assert f_ours.shape == f_theirs.shape == (3, ours.n_features)
    np.testing.assert_allclose(f_ours, f_theirs, rtol=1e-5, atol=1e-5 * np.abs(f_theirs).max())

@pytest.mark.parametrize("d,n_real,n_fake", [(8, 60, 40), (64, 400, 300)])
def test_fid_equals_medmetric(d, n_real, n_fake):
    pytest.importorskip("medmetric"); pytest.importorskip("monai")
    from medmetric.metrics import FID
    rng = np.random.default_rng(d)
    real = rng.standard_normal((n_real, d)) @ rng.standard_normal((d, d)) * 0.3
    fake = rng.standard_normal((n_fake, d)) * 1.2 + 0.1
    theirs = float(FID()(torch.from_numpy(fake), torch.from_numpy(real)))
    assert fid(real, fake) == pytest.approx(theirs, rel=1e-6)

def _one_sentence(e):
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith("."), msg
    return msg

def test_known_file_name_is_checked_by_default(tmp_path):
    "resnet_10_23dataset.pth has a published SHA-256: a file of that name that does not match is refused by default."
    p = tmp_path / "resnet_10_23dataset.pth"
    torch.save(official_state_dict(10, seed=2), p)
    with pytest.raises(TofError) as e: load_medicalnet(p, 10)
    msg = _one_sentence(e)
    assert "resnet_10_23dataset.pth" in msg and R10_23DATASET_SHA256 in msg and sha256_file(p) in msg
    assert "TencentMedicalNet/MedicalNet-Resnet10" in msg                 # where to get the right file
    assert load_medicalnet(p, 10, sha256=sha256_file(p)).weights_sha256 == sha256_file(p)   # an explicit checksum wins
    other = tmp_path / "my_resnet10.pth"; other.write_bytes(p.read_bytes())
    load_medicalnet(other, 10)                                            # unknown names: checked only when asked
