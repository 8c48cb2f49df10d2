import math
import pytest
import torch
from torch import nn
from tof3dgan.core import get_preset
from tof3dgan.networks import Critic, Generator, build_models, param_counts

@pytest.mark.parametrize("preset,width,g,d,total", [
    ("paper_gp", 512, 139_916_994, 4_780_353, 144_697_347),
    ("paper_sn", 512, 139_916_994, 4_780_353, 144_697_347),
    ("paper_sn_mp", 512, 139_916_994, 4_780_353, 144_697_347),
    ("paper_c_sn_mp", 1024, 289_123_714, 18_850_433, 307_974_147),
])
def test_exact_paper_parameter_counts(preset, width, g, d, total):
    cfg = get_preset(preset)
    assert cfg.width == width and cfg.patch == (128, 128, 64)
    assert param_counts(cfg) == {"generator": g, "critic": d, "total": total}

def test_dp_width_group_norm_count():
    assert param_counts(get_preset("paper_sn", width=256, g_norm="group"))["total"] == 70_026_243

def test_meta_counting_allocates_nothing():
    g, d = build_models(get_preset("paper_c_sn_mp"), "meta")
    assert all(p.is_meta for p in g.parameters()) and all(p.is_meta for p in d.parameters())

@pytest.mark.parametrize("patch", [(16, 16, 8), (32, 32, 16), (24, 40, 8), (64, 32, 16), (48, 48, 24)])
def test_shapes_for_patch_sizes(patch):
    cfg = get_preset("quick", patch=patch)
    g, d = build_models(cfg)
    x = g(torch.randn(3, cfg.z_dim))
    assert x.shape == (3, 2, *patch) and x.abs().max() <= 1
    assert d(x).shape == (3,)
    assert d.fc.in_features == cfg.width * math.prod((p + 15) // 16 for p in patch)

def test_generator_stages_follow_reference():
    g = Generator(width=64, patch=(32, 32, 16))
    assert g.base == (4, 4, 2) and g.fc.out_features == 64 * 4 * 4 * 2
    convs = [m for m in g.modules() if isinstance(m, nn.Conv3d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(64, 32), (32, 16), (16, 8), (8, 2)]
    assert all(c.kernel_size == (3, 3, 3) and c.stride == (1, 1, 1) for c in convs)
    ups = [m for m in g.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 3 and all(u.mode == "nearest" and u.scale_factor == 2 for u in ups)

def test_critic_variants():
    _, d_gp = build_models(get_preset("quick", critic_norm="instance", patch=(32, 32, 16)))
    _, d_sn = build_models(get_preset("quick", critic_norm="spectral"))
    assert sum(isinstance(m, nn.InstanceNorm3d) for m in d_gp.modules()) == 4
    assert not any(isinstance(m, nn.InstanceNorm3d) for m in d_sn.modules())
    sn = [m for m in d_sn.features if isinstance(m, nn.Conv3d)]
    assert len(sn) == 4 and all(hasattr(m, "parametrizations") for m in sn)
    assert not hasattr(d_sn.fc, "parametrizations")            # the last linear layer is not normalised
    assert all(c.stride == (2, 2, 2) for c in sn)
    assert all(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 and not m.inplace
               for m in d_sn.features if isinstance(m, nn.LeakyReLU))

def test_authors_initialisation():
    torch.manual_seed(0)
    g, d = build_models(get_preset("paper_sn", width=64, patch=(32, 32, 16)))
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.Conv3d)])
    assert abs(w.std().item() - 0.05) < 0.003 and abs(w.mean().item()) < 0.003
    bn = [m for m in g.modules() if isinstance(m, nn.BatchNorm3d)]
    assert all(float(m.bias.detach().abs().max()) == 0 for m in bn)
    bw = torch.cat([m.weight.flatten() for m in bn])
    assert abs(bw.mean().item()) < 0.02 and 0.03 < bw.std().item() < 0.07
    orig = d.features[0].parametrizations.weight.original
    assert abs(orig.std().item() - 0.05) < 0.01
