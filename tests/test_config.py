"GANConfig and the presets: the paper's numbers pinned, and combinations that cannot work refused up front."
import pytest
from tof3dgan.core import GANConfig, PRESETS, TofError, get_preset

PAPER = dict(lr_d=4e-4, lr_g=2e-4, betas=(0.0, 0.9), n_critic=1, gp_lambda=10.0, batch_size=4, epochs=100, z_dim=128,
             patch=(128, 128, 64), spacing=(0.5, 0.5, 0.7), n_train=2350, gp_mode="per_sample", gp_through_g=False,
             g_norm="batch", label_encoding="paper", sample_bn="train", reuse_fake=False)

@pytest.mark.parametrize("name, width, critic, precision, threshold", [
    ("paper_gp", 512, "instance", "fp32", 0.3),       # paper 2.4: threshold 0.3, 0.2 for SN
    ("paper_sn", 512, "spectral", "fp32", 0.2),
    ("paper_sn_mp", 512, "spectral", "mixed", 0.3),
    ("paper_c_sn_mp", 1024, "spectral", "mixed", 0.3),
])
def test_paper_presets_are_pinned(name, width, critic, precision, threshold):
    c = PRESETS[name]
    assert (c.width, c.critic_norm, c.precision, c.threshold) == (width, critic, precision, threshold)
    assert {k: getattr(c, k) for k in PAPER} == PAPER
    assert all(isinstance(b, float) for b in c.betas)          # torch 2.13 rejects betas=(0, 0.9)

def test_reuse_fake_with_penalty_through_g_is_refused():
    "The reused fake's graph is freed by the critic step's backward through G: refuse the pair up front."
    with pytest.raises(TofError, match="reuse_fake.*gp_through_g|gp_through_g.*reuse_fake"):
        GANConfig(reuse_fake=True, gp_through_g=True)
    get_preset("quick", reuse_fake=True); get_preset("quick", gp_through_g=True)     # each alone is fine

def test_unknown_choice_names_the_allowed_values():
    with pytest.raises(TofError, match="precision must be one of fp32, mixed, fp16, bf16"): GANConfig(precision="fp8")

def test_dp_preset_is_appendix_b_and_the_plain_trainer_refuses_it(tmp_path):
    "Appendix B: no penalty, no spectral norm, 5 critic steps, lr 1e-4, w = 256, GroupNorm; without clipping it is no WGAN."
    c = PRESETS["dp"]
    assert (c.width, c.critic_norm, c.g_norm, c.n_critic, c.lr_d, c.lr_g, c.gp_lambda, c.patch, c.batch_size) == \
           (256, "none", "group", 5, 1e-4, 1e-4, 0.0, (128, 128, 64), 4)
    from tof3dgan.train import Trainer
    from conftest import random_pairs
    with pytest.raises(TofError, match="no Lipschitz constraint.*DPTrainer"):
        Trainer(get_preset("dp", width=16, patch=(16, 16, 8)), random_pairs(4, 0), tmp_path / "r", device="cpu", progress=False)
    assert not (tmp_path / "r").exists()
