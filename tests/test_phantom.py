import numpy as np
import pytest
from conftest import SHARED
from tof3dgan.patches import grid_origins
from tof3dgan.phantom import make_phantom, phantom_pairs, render_around_mask, tube_distance, vessel_tree

def test_seeded_and_different_seeds_differ():
    a, b, c = (make_phantom((64, 72, 32), seed=s) for s in (5, 5, 6))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.label, c.label)

def test_label_is_exactly_inside_the_tubes():
    shape, sp = (64, 72, 32), (0.5, 0.5, 0.7)
    ph = make_phantom(shape, sp, seed=2)
    segs = vessel_tree(shape, sp, seed=2)
    assert np.array_equal(ph.label, (tube_distance(segs, shape, sp) <= 0).astype(np.uint8))
    # brute force on a few voxels: inside <=> distance to some segment axis <= its interpolated radius
    rng = np.random.default_rng(0)
    idx = np.argwhere(ph.label)[rng.choice(int(ph.label.sum()), 20)]
    for v in idx:
        p = (v + 0.5) * np.array(sp)
        a, b, ra, rb = segs[:, :3], segs[:, 3:6], segs[:, 6], segs[:, 7]
        ab = b - a; t = np.clip(((p - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-12), 0, 1)
        assert (np.linalg.norm(p - a - t[:, None] * ab, axis=1) <= ra + t * (rb - ra) + 1e-5).any()

def test_tof_contrast_and_full_size_vessel_fraction():
    ph = make_phantom(seed=0)                            # 312x384x127 at 0.5x0.5x0.7 mm
    assert ph.image.shape == (312, 384, 127) and ph.spacing == (0.5, 0.5, 0.7)
    assert 0.0005 < ph.vessel_fraction < 0.01
    vessel, tissue = ph.image[ph.label == 1], ph.image[(ph.brain == 1) & (ph.label == 0)]
    assert np.median(vessel) > 2 * np.median(tissue)
    assert ph.image[0, 0, :].mean() < 0.1                # air outside the head is dark (Rician floor)
    outside = (ph.label == 1) & (ph.brain == 0) & (np.arange(127) >= 60)[None, None, :]
    assert outside.sum() < 0.05 * ph.label.sum()         # vessels stay in the brain (or run up from below it)

def test_paper_patch_mix_vessel_fraction():
    p = phantom_pairs(50, (128, 128, 64), progress=False)
    frac = p[:, 1].mean(axis=(1, 2, 3))
    assert 0.002 < frac.mean() < 0.05                    # the 0.2-5 % in patches
    assert (p[18:, 1, 64, 64, 32] == 1).all()           # the 32 random patches are vessel-centred
    assert len(grid_origins((312, 384, 127), (128, 128, 64))) == 18

@pytest.mark.skipif(not (SHARED / "vessel_masks").exists(), reason="shared real data not present")
def test_render_around_real_mask():
    nib = pytest.importorskip("nibabel")
    m = nib.load(SHARED / "vessel_masks" / "Normal001-MRA-STAPLE.nii.gz")
    mask = np.asanyarray(m.dataobj)[112:336, 112:336, 32:96] > 0.5
    ph = render_around_mask(mask, tuple(float(z) for z in m.header.get_zooms()), seed=0)
    assert np.array_equal(ph.label.astype(bool), mask)
    assert np.median(ph.image[mask]) > 2 * np.median(ph.image[(~mask) & (ph.brain == 1)])
