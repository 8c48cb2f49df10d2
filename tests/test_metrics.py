"Evaluation metrics: FID, PRD, P/R/D/C, DSC/bAVD/AVD, topology, label fidelity and evaluate() end to end."
import json, math
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import linalg
from conftest import random_pairs, write_pairs, SHARED
from tof3dgan.core import TofError
from tof3dgan.generate import save_nifti
from tof3dgan.medicalnet import official_state_dict, sha256_file
from tof3dgan.metrics.fid import FeatureStats, fid, fid_from_stats
from tof3dgan.metrics.seg import calibrate_threshold, dice, score_cases, seg_scores, summarise_scores, threshold_segmenter
from tof3dgan.metrics.evaluate import evaluate
from tof3dgan.metrics.prd import f_beta, plot_prd, prd, prd_auc, prd_curve, prdc
from tof3dgan.metrics.topology import label_fidelity, topology_compare, vessel_topology

# ---------------------------------------------------------------- FID
def _psd_sqrt(a):
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

def _closed_form(mu1, s1, mu2, s2):
    "Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2): symmetric, computed with eigh (independent of sqrtm)."
    r = _psd_sqrt(s1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(_psd_sqrt(r @ s2 @ r)))

def test_fid_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(300, 16)) * np.arange(1, 17)
    assert abs(fid(f, f)) < 1e-8

def test_fid_matches_closed_form_on_given_statistics():
    rng = np.random.default_rng(1)
    for _ in range(5):
        a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
        s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)     # non-commuting covariances
        mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
        assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=1e-9, abs=1e-9)
    d1, d2 = np.array([1.0, 4, 9]), np.array([4.0, 1, 16])
    assert fid_from_stats(np.zeros(3), np.diag(d1), np.full(3, 2.0), np.diag(d2)) == pytest.approx(12 + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum())

def test_fid_of_sampled_gaussians_approaches_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2 = np.zeros(3), np.array([1.0, -1.0, 0.5])
    s1, s2 = np.diag([1.0, 2.0, 0.5]), np.array([[1.0, 0.3, 0], [0.3, 1.0, 0], [0, 0, 2.0]])
    x, y = rng.multivariate_normal(mu1, s1, 40000), rng.multivariate_normal(mu2, s2, 40000)
    exact = _closed_form(mu1, s1, mu2, s2)
    assert fid(x, y) == pytest.approx(exact, rel=0.02)

def test_fid_uses_unbiased_covariance_and_float64():
    f = np.random.default_rng(3).normal(size=(5, 2)).astype(np.float32)
    st = FeatureStats.from_features(f)
    assert st.sigma.dtype == np.float64
    np.testing.assert_allclose(st.sigma, np.cov(f.astype(np.float64).T, ddof=1))

def test_fid_singular_covariances_fall_back_to_offset():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(10, 40)), rng.normal(size=(10, 40))       # n < d: singular covariances
    v = fid(a, b)
    assert np.isfinite(v) and v > 0

def test_feature_stats_roundtrip_and_bad_file(tmp_path):
    f = np.random.default_rng(5).normal(size=(50, 4))
    st = FeatureStats.from_features(f, {"normalisation": "zscore"})
    st.save(tmp_path / "s.npz")
    back = FeatureStats.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.mu, st.mu); np.testing.assert_array_equal(back.sigma, st.sigma)
    assert back.n == 50 and back.meta == {"normalisation": "zscore"}
    assert fid(back, f) == pytest.approx(0, abs=1e-9)
    (tmp_path / "x.npz").write_bytes(b"junk")
    with pytest.raises(TofError, match="not a feature-statistics file"): FeatureStats.load(tmp_path / "x.npz")
    with pytest.raises(TofError, match="differ in dimension"): fid(f, f[:, :3])

@pytest.mark.parametrize("cut", [40, 200, 1000])
def test_feature_stats_truncated_file_is_one_sentence(tmp_path, cut):
    FeatureStats.from_features(np.random.default_rng(5).normal(size=(50, 4))).save(tmp_path / "s.npz")
    (tmp_path / "t.npz").write_bytes((tmp_path / "s.npz").read_bytes()[:-cut])
    with pytest.raises(TofError, match="not a feature-statistics file"): FeatureStats.load(tmp_path / "t.npz")

def test_feature_stats_memory_error_is_not_reported_as_a_bad_file(tmp_path, monkeypatch):
    FeatureStats.from_features(np.random.default_rng(5).normal(size=(50, 4))).save(tmp_path / "s.npz")
    def boom(*a, **k): raise MemoryError()
    monkeypatch.setattr(np, "load", boom)
    with pytest.raises(MemoryError): FeatureStats.load(tmp_path / "s.npz")

# ---------------------------------------------------------------- PRD
def test_prd_curve_on_hand_built_histograms():
    p, r = prd_curve(np.array([0.5, 0.5]), np.array([0.5, 0.5]), num_angles=1001)
    slopes = np.tan(np.linspace(1e-10, np.pi / 2 - 1e-10, 1001))
    np.testing.assert_allclose(p, np.minimum(slopes, 1), rtol=1e-12)
    np.testing.assert_allclose(r, np.minimum(1 / slopes, 1), rtol=1e-12)
    p, r = prd_curve(np.array([0.5, 0.0, 0.5]), np.array([0.5, 0.5, 0.0]))    # half of each mass is shared
    assert p.max() == pytest.approx(0.5) and r.max() == pytest.approx(0.5)
    p, r = prd_curve(np.array([0.6, 0.6]), np.array([0.5, 0.5]))          # rounding can push sums above 1: clipped
    assert p.max() == 1.0 and r.max() == 1.0
    assert f_beta(np.array([0.5]), np.array([0.5]), 8)[0] == pytest.approx(0.5, rel=1e-8)

def test_prd_auc_of_known_curves():
    r = np.linspace(0, 1, 11)
    assert prd_auc(np.ones(11), r) == pytest.approx(1.0)
    assert prd_auc(1 - r[::-1], r[::-1]) == pytest.approx(0.5)            # sorted internally
    p, r = prd_curve(np.array([0.25, 0.75]), np.array([0.25, 0.75]))
    assert prd_auc(p, r) == pytest.approx(1.0, abs=1e-6)

def test_prd_identical_sets_auc_one_and_disjoint_low():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    same = prd(x, x.copy(), num_clusters=10, num_runs=3, seed=0)
    assert same.auc == pytest.approx(1, abs=1e-6) and same.f8 == pytest.approx(1, abs=1e-6) and same.f1_8 == pytest.approx(1, abs=1e-6)
    apart = prd(x, rng.normal(size=(120, 5)) + 30, num_clusters=10, num_runs=3, seed=0)
    assert apart.auc < 0.05 and apart.f8 < 0.05
    near = prd(x, rng.normal(size=(120, 5)) + 1.0, num_clusters=10, num_runs=3, seed=0)
    assert apart.auc < near.auc < same.auc
    assert len(same.precision) == 1001

def test_prd_is_seeded_and_checks_balance():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) + 0.5
    a, b = prd(x, y, num_clusters=8, num_runs=2, seed=4), prd(x, y, num_clusters=8, num_runs=2, seed=4)
    np.testing.assert_array_equal(a.precision, b.precision)
    with pytest.raises(TofError, match="equally many"): prd(x, y[:30])
    prd(x, y[:30], num_clusters=8, num_runs=1, enforce_balance=False)
    with pytest.raises(TofError, match="needs at least"): prd(x[:4], y[:4], num_clusters=20)

@pytest.mark.parametrize("shift", [0.0, 0.7, 2.0])
def test_prd_authors_orientation_mirrors_the_curve(shift):
    rng = np.random.default_rng(3)
    real = rng.normal(size=(80, 4))
    fake = np.vstack([real[real[:, 0] > 0][:40], rng.normal(size=(40, 4)) + shift])     # half collapsed, half shifted
    ours = prd(real, fake, num_clusters=10, num_runs=3, seed=1)
    theirs = prd(real, fake, num_clusters=10, num_runs=3, seed=1, authors_orientation=True)
    assert ours.orientation == "sajjadi" and theirs.orientation == "authors" and theirs.summary()["orientation"] == "authors"
    np.testing.assert_allclose(theirs.precision, ours.recall[::-1], atol=1e-12)
    np.testing.assert_allclose(theirs.recall, ours.precision[::-1], atol=1e-12)
    assert theirs.auc == pytest.approx(ours.auc, abs=1e-9)
    assert (theirs.f8, theirs.f1_8) == pytest.approx((ours.f1_8, ours.f8), abs=1e-6)
    # the swap equals evaluating the real histogram against the synthetic one (the authors' argument order)
    h1, h2 = rng.dirichlet(np.ones(10)), rng.dirichlet(np.ones(10))
    p, r = prd_curve(h1, h2)
    p2, r2 = prd_curve(h2, h1)
    np.testing.assert_allclose(p2, r[::-1], atol=1e-9); np.testing.assert_allclose(r2, p[::-1], atol=1e-9)

def test_plot_prd_returns_figure():
    from matplotlib.figure import Figure
    x = np.random.default_rng(2).normal(size=(40, 3))
    fig = plot_prd({"a": prd(x, x, num_clusters=5, num_runs=1)})
    assert isinstance(fig, Figure) and "AUC" in fig.axes[0].get_legend().get_texts()[0].get_text()

# ---------------------------------------------------------------- P/R/D/C
def test_prdc_hand_built_line():
    real = np.arange(6.0)[:, None]                                         # k=2 radii: 2, 1, 1, 1, 1, 2
    res = prdc(real, np.array([[0.5], [2.5], [7.0]]), k=2)                 # 7.0 lies exactly on the radius of 5
    assert res["precision"] == pytest.approx(2 / 3) and res["density"] == pytest.approx(2 / 3)
    assert res["coverage"] == pytest.approx(4 / 6) and res["recall"] == 1.0
    # fake radii (k=2) of [0, 0.2, 10]: 10, 9.8, 10 -> every real point is covered
    res = prdc(real, np.array([[0.0], [0.2], [10.0]]), k=2)
    assert res["recall"] == 1.0 and res["precision"] == pytest.approx(2 / 3)

def test_prdc_strict_inequality_and_self_exclusion():
    real = np.array([[0.0], [1.0], [3.0]])                                 # k=1 radii: 1, 1, 2
    # 2.0 is exactly at radius 1 from 1.0 (not inside) but 1 < 2 from 3.0 (inside); 5.0 is exactly 2 from 3.0 (outside)
    assert prdc(real, np.array([[2.0], [5.0]]), k=1)["precision"] == 0.5
    dup = np.array([[0.0], [0.0], [4.0]])                                  # a duplicate is a neighbour: radius 0
    assert prdc(dup, np.array([[0.0], [9.0]]), k=1)["precision"] == 0.0    # distance 0 is not < radius 0
    assert prdc(np.arange(6.0)[:, None], np.arange(6.0)[:, None] + 0.1, k=5)["coverage"] == 1.0

def test_prdc_needs_more_than_k_samples():
    with pytest.raises(TofError, match="needs more than 5"): prdc(np.zeros((5, 2)), np.zeros((10, 2)))

# ---------------------------------------------------------------- DSC, bAVD, AVD
def _brute(A, B, sp):
    a, b = np.argwhere(A) * sp, np.argwhere(B) * sp
    return float(np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).min(1).sum())

@pytest.mark.parametrize("method", ["kdtree", "edt"])
@pytest.mark.parametrize("spacing", [None, (0.5, 0.5, 0.7), (1.3, 0.4, 2.0)])
def test_bavd_equals_brute_force(method, spacing):
    rng = np.random.default_rng(7)
    sp = np.ones(3) if spacing is None else np.array(spacing)
    for _ in range(15):
        G, S = rng.random((10, 9, 7)) < rng.uniform(0.02, 0.2), rng.random((10, 9, 7)) < rng.uniform(0.02, 0.2)
        if not G.any() or not S.any(): continue
        s = seg_scores(S, G, spacing, method=method)
        d_gs, d_sg = _brute(G, S, sp), _brute(S, G, sp)
        assert s.bavd == pytest.approx((d_gs + d_sg) / (2 * G.sum()), rel=1e-12, abs=1e-12)
        assert s.avd == pytest.approx((d_gs / G.sum() + d_sg / S.sum()) / 2, rel=1e-12, abs=1e-12)
        assert s.dsc == pytest.approx(2 * (G & S).sum() / (G.sum() + S.sum()))
        assert s.unit == ("voxel" if spacing is None else "mm") and s.reason is None

def test_bavd_divides_both_terms_by_ground_truth_count():
    G = np.zeros((1, 1, 10), bool); G[0, 0, 0] = True                      # one GT voxel
    S = np.zeros((1, 1, 10), bool); S[0, 0, [2, 3]] = True                 # two predicted voxels at 2 and 3
    s = seg_scores(S, G)
    # d_GS = 2 (GT voxel to nearest prediction), d_SG = 2 + 3 = 5
    assert s.bavd == pytest.approx((2 + 5) / (2 * 1))
    assert s.avd == pytest.approx((2 / 1 + 5 / 2) / 2)
    assert s.dsc == 0.0 and (s.n_gt, s.n_pred, s.tp) == (1, 2, 0)
    assert seg_scores(S, G, spacing=(1, 1, 0.5)).bavd == pytest.approx(3.5 / 2)

def test_empty_masks_give_nan_with_reason():
    z, m = np.zeros((4, 4, 4)), np.zeros((4, 4, 4)); m[1, 1, 1] = 1
    e = seg_scores(z, m)
    assert math.isnan(e.bavd) and math.isnan(e.avd) and e.dsc == 0.0 and "prediction is empty" in e.reason
    e = seg_scores(m, z)
    assert math.isnan(e.bavd) and "ground truth is empty" in e.reason
    e = seg_scores(z, z)
    assert math.isnan(e.dsc) and math.isnan(e.bavd) and "both masks are empty" in e.reason

def test_brain_mask_and_shape_errors():
    rng = np.random.default_rng(8)
    G, S = rng.random((8, 8, 6)) < 0.2, rng.random((8, 8, 6)) < 0.2
    M = np.zeros_like(G); M[2:6, 1:7] = True
    assert seg_scores(S, G, brain_mask=M) == seg_scores(S & M, G & M)
    assert seg_scores(S, G, brain_mask=M) != seg_scores(S, G)
    with pytest.raises(TofError, match="differ in shape"): seg_scores(S, G[:4])
    with pytest.raises(TofError, match="Brain mask"): seg_scores(S, G, brain_mask=M[:4])

def test_score_cases_and_summary(tmp_path):
    rng = np.random.default_rng(9)
    cases = {f"c{i}": (rng.random((6, 6, 4)) < 0.3, rng.random((6, 6, 4)) < 0.3) for i in range(3)}
    save_nifti(cases["c0"][0].astype(np.uint8), (1, 1, 1), tmp_path / "p.nii.gz")
    cases["file"] = (tmp_path / "p.nii.gz", cases["c0"][1])
    cases["empty"] = (np.zeros((6, 6, 4)), cases["c1"][1])
    df = score_cases(cases, progress=False)
    assert list(df.case) == ["c0", "c1", "c2", "file", "empty"]
    assert df.bavd[0] == df.bavd[3] and math.isnan(df.bavd[4])
    summ = summarise_scores(df)
    good = df.dsc
    assert summ["dsc"] == f"{good.mean():.3f} ({good.std():.3f})"
    assert summ["bavd"] == f"{df.bavd[:4].mean():.3f} ({df.bavd[:4].std():.3f})"
    assert summ["n_cases"] == 5 and summ["n_undefined"] == 1

@pytest.mark.skipif(not (SHARED / "vessel_masks" / "Normal001-MRA-STAPLE.nii.gz").exists(), reason="shared vessel masks absent")
def test_real_rater_pair_kdtree_equals_edt():
    import nibabel as nib
    d = SHARED / "vessel_masks"
    G = np.asanyarray(nib.load(str(d / "Normal001-MRA-STAPLE.nii.gz")).dataobj) > 0.5
    S = np.asanyarray(nib.load(str(d / "Normal001-MRA-nnUNet.nii.gz")).dataobj) > 0.5
    sp = (0.513393, 0.513393, 0.800001)
    a, b = seg_scores(S, G, sp), seg_scores(S, G, sp, method="edt")
    assert a.bavd == pytest.approx(b.bavd, rel=1e-12) and a.avd == pytest.approx(b.avd, rel=1e-12)
    assert 0.5 < a.dsc < 1 and a.n_gt == int(G.sum())

# ---------------------------------------------------------------- topology and label fidelity
def _tube(n=30):
    t = np.zeros((n, 11, 11), bool)
    zz, yy = np.mgrid[:11, :11]
    t[:, (zz - 5) ** 2 + (yy - 5) ** 2 <= 6] = True
    return t

def test_vessel_topology_of_tube_and_fragments():
    t = vessel_topology(_tube())
    assert t["n_components"] == 1 and t["largest_fraction"] == 1.0
    assert 20 <= t["skeleton_length"] <= 30 and 2 <= np.median(t["radii"]) <= 4
    cut = _tube(); cut[[7, 15, 23]] = False
    c = vessel_topology(cut)
    assert c["n_components"] == 4 and c["largest_fraction"] < 0.35
    diag = np.zeros((5, 5, 5), bool); diag[[0, 1, 2], [0, 1, 2], [0, 1, 2]] = True   # corner-touching: 26-connected
    assert vessel_topology(diag)["n_components"] == 1
    e = vessel_topology(np.zeros((4, 4, 4)))
    assert e["n_components"] == 0 and math.isnan(e["largest_fraction"])
    t_mm = vessel_topology(_tube(), spacing=(2, 2, 2))
    np.testing.assert_allclose(t_mm["radii"], 2 * t["radii"])

def test_topology_compare_summary():
    cut = _tube(); cut[[7, 15, 23]] = False
    s, df = topology_compare([_tube(), _tube()], [cut, np.zeros_like(cut)], progress=False)
    assert s["n_components"]["real_mean"] == 1 and s["n_components"]["synthetic_mean"] == 2
    assert s["n_components"]["wasserstein"] == pytest.approx(2.0)        # {1, 1} vs {4, 0}: |1-0| + |1-4| over 2
    assert s["largest_fraction"]["synthetic_mean"] < 0.35                  # the empty label's NaN is left out
    assert len(df) == 4 and set(df.set) == {"real", "synthetic"}
    same, _ = topology_compare([_tube()], [_tube()], progress=False)
    assert all(v["wasserstein"] == 0 for v in same.values())

def test_label_fidelity_with_threshold_segmenter():
    rng = np.random.default_rng(3)
    labels = rng.random((6, 8, 8, 4)) < 0.2
    images = np.where(labels, 200.0, 40.0) + rng.normal(0, 10, labels.shape)
    thr = calibrate_threshold(images, labels)
    assert 60 < thr < 180
    good = label_fidelity(images, labels, threshold_segmenter(thr), progress=False)
    assert np.all(good > 0.95)
    bad = label_fidelity(images, labels[::-1], threshold_segmenter(thr), progress=False)
    assert bad.mean() < 0.4
    assert math.isnan(dice(np.zeros(3), np.zeros(3)))
    with pytest.raises(TofError, match="pass matching pairs"): label_fidelity(images, labels[:2], threshold_segmenter(thr))

# ---------------------------------------------------------------- evaluate end to end

KW = dict(num_clusters=4, num_runs=2, k=3, progress=False)

def test_evaluate_arrays_writes_table1(tmp_path):
    real, syn = random_pairs(10, 0), random_pairs(8, 1, shift=0.3)
    res = evaluate(real, syn, out=tmp_path / "ev", **KW)
    files = sorted(p.name for p in (tmp_path / "ev").iterdir())
    assert files == ["metrics.csv", "metrics.json", "prd.png", "prd_curve.csv", "real_stats.npz", "topology.csv"]
    js = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert js["features"]["normalisation"] == "medicalnet" and js["features"]["weights"] == "random-init, seed 0"
    assert js["features"]["weights_sha256"] is None and "randomly initialised" in js["features"]["note"]
    assert js["prd"]["n_per_set"] == 8 and js["n_real"] == 10 and js["n_synthetic"] == 8
    row = pd.read_csv(tmp_path / "ev" / "metrics.csv").iloc[0]
    assert row["FID"] == pytest.approx(res["fid"]) and row["PRD-AUC"] == pytest.approx(res["prd"]["prd_auc"])
    for col in ("F8", "F1/8", "precision", "recall", "density", "coverage", "components_real", "radius_W1"):
        assert col in row.index
    st = FeatureStats.load(tmp_path / "ev" / "real_stats.npz")
    assert st.n == 10 and st.meta["normalisation"] == "medicalnet"
    assert res["fid"] > 0 and 0 <= res["prd"]["prd_auc"] <= 1

def test_evaluate_separates_good_from_bad():
    real = random_pairs(12, 0)
    ok = evaluate(real, random_pairs(12, 1), **KW)
    bad = evaluate(real, random_pairs(12, 2, shift=0.8), **KW)
    assert ok["fid"] < bad["fid"]

def test_evaluate_folders_with_weights_and_zscore(tmp_path):
    r, s = write_pairs(random_pairs(6, 0), tmp_path / "real"), write_pairs(random_pairs(6, 1), tmp_path / "syn")
    torch.save(official_state_dict(10, seed=9), tmp_path / "w.pth")
    res = evaluate(r, s, tmp_path / "w.pth", out=tmp_path / "ev", norm="zscore", segmenter=threshold_segmenter(127.5), **KW)
    assert res["features"]["weights_sha256"] == sha256_file(tmp_path / "w.pth")
    assert res["features"]["normalisation"] == "zscore" and "note" not in res["features"]
    assert res["name"] == "syn" and res["label_fidelity"]["dice_mean"] > 0.9
    topo = pd.read_csv(tmp_path / "ev" / "topology.csv")
    assert set(topo.case) == {f"c{i:03d}" for i in range(6)}

def test_evaluate_bad_weights_one_sentence_and_nothing_written(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"garbage")
    with pytest.raises(TofError) as e:
        evaluate(random_pairs(6, 0), random_pairs(6, 1), tmp_path / "w.pth", out=tmp_path / "ev", **KW)
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(".") and "w.pth" in msg
    def boom(img): raise RuntimeError("segmenter failed")
    with pytest.raises(RuntimeError): evaluate(random_pairs(6, 0), random_pairs(6, 1), out=tmp_path / "ev", segmenter=boom, **KW)
    assert not (tmp_path / "ev").exists() and not list(tmp_path.glob("ev*"))

def _phantom_pairs(seed):
    "Phantom patch pairs: a constant background at each patch's minimum (about 17% of voxels), like zero-padded real patches."
    from tof3dgan.phantom import phantom_pairs
    return phantom_pairs(12, (32, 32, 16), (64, 72, 32), seed=seed, per_volume=6, systematic=2, progress=False)

def _write_generated(raw, root):
    "What `generate` writes (its default image scaling) for raw generator outputs `raw` (n, 2, x, y, z)."
    from tof3dgan.generate import to_volumes
    for i, x in enumerate(raw):
        img, lab = to_volumes(x, 0.5)
        save_nifti(img, (0.5, 0.5, 0.7), root / "imagesTr" / f"g{i:03d}_0000.nii.gz")
        save_nifti(lab, (0.5, 0.5, 0.7), root / "labelsTr" / f"g{i:03d}.nii.gz")
    return root

def test_evaluate_feeds_real_and_generated_images_on_one_scale(tmp_path):
    real = _phantom_pairs(0)
    raw = real.copy(); raw[:, 0] = 0.7 * raw[:, 0] - 0.2        # the generator's output of the real images: range [-0.9, 0.5]
    same = evaluate(real, _write_generated(raw, tmp_path / "syn"), **KW)
    other = evaluate(real, _phantom_pairs(1), **KW)
    zf = same["features"]["zero_voxel_fraction"]
    assert same["features"]["scaling"] == "minmax" and zf["real"] == zf["synthetic"] > 0
    assert same["fid"] < 0.25 * other["fid"] and same["prd"]["prd_auc"] > 0.95

def test_evaluate_scaling_fixed_is_the_former_path(tmp_path):
    from tof3dgan.generate import image_to_u8
    real = _phantom_pairs(0)
    root = tmp_path / "syn"
    for i, p in enumerate(real):                               # the former pipeline: fixed map in generate and evaluate
        save_nifti(image_to_u8(0.7 * p[0] - 0.2, "fixed"), (1, 1, 1), root / "imagesTr" / f"g{i:03d}_0000.nii.gz")
        save_nifti(p[1].astype(np.uint8), (1, 1, 1), root / "labelsTr" / f"g{i:03d}.nii.gz")
    old, new = evaluate(real, root, scaling="fixed", **KW), evaluate(real, root, **KW)
    assert old["features"]["zero_voxel_fraction"]["synthetic"] == 0 < old["features"]["zero_voxel_fraction"]["real"]
    assert new["features"]["zero_voxel_fraction"]["synthetic"] > 0 and new["fid"] < 0.25 * old["fid"]
    with pytest.raises(TofError, match="must be one of"): evaluate(real, root, scaling="percentile", **KW)

def test_evaluate_records_prd_orientation(tmp_path):
    real, syn = random_pairs(12, 0), random_pairs(12, 1, shift=0.3)
    ours = evaluate(real, syn, **KW)
    theirs = evaluate(real, syn, out=tmp_path / "ev", authors_orientation=True, **KW)
    assert ours["prd"]["orientation"] == "sajjadi" and theirs["prd"]["orientation"] == "authors"
    assert theirs["prd"]["prd_auc"] == pytest.approx(ours["prd"]["prd_auc"], abs=1e-9)
    assert (theirs["prd"]["f8"], theirs["prd"]["f1_8"]) == pytest.approx((ours["prd"]["f1_8"], ours["prd"]["f8"]), abs=1e-6)
    assert pd.read_csv(tmp_path / "ev" / "metrics.csv").iloc[0]["prd_orientation"] == "authors"

def test_evaluate_refuses_patches_of_two_sizes():
    with pytest.raises(TofError, match="one size"): evaluate(random_pairs(6, 0), random_pairs(6, 1, shape=(16, 16, 16)), **KW)
