"Viewers: sizes follow the voxel spacing, MIPs are maxima, error-map colours, the static HTML cap, and the slider in a real browser."
import base64, re, shutil, subprocess
from pathlib import Path
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from tof3dgan.phantom import make_phantom
from tof3dgan.viz import (ERROR_COLOURS, VolumeView, error_map, error_view, fig4_grid, mip, mip_view, ortho_view,
                          pair_grid, png_bytes, save_fig, slice_rgb, surface_view, vessel_mesh, window)

SP = (0.5, 0.5, 0.7)

@pytest.fixture(scope="module")
def ph():
    return make_phantom((40, 60, 30), SP, seed=2)

def _boxes(fig):
    "Drawn (width, height) in pixels of each image panel."
    FigureCanvasAgg(fig).draw()
    return [(ax.get_window_extent().width, ax.get_window_extent().height) for ax in fig.axes if ax.images]

def _phys(shape, spacing):
    "Physical (width, height) in mm of the axial, coronal, sagittal panels."
    e = np.array(shape) * np.array(spacing)
    return [(e[0], e[1]), (e[0], e[2]), (e[1], e[2])]

def test_mip_of_phantom_is_max_along_axis(ph):
    for ax, name in ((0, "sagittal"), (1, "coronal"), (2, "axial")):
        np.testing.assert_array_equal(mip(ph.image, ax), ph.image.max(ax))
        np.testing.assert_array_equal(mip(ph.label, name), ph.label.max(ax))
    # the MIP panels show exactly the windowed maxima (axial: x to the right, y up)
    f = mip_view(ph.image, spacing=SP, level=0.5, width=1.0)
    shown = f.axes[0].images[0].get_array()
    want = np.repeat(window(ph.image.max(2), 0.5, 1.0)[..., None], 3, -1).swapaxes(0, 1)[::-1]
    np.testing.assert_allclose(shown, want, atol=1e-6)

@pytest.mark.parametrize("shape,spacing", [((40, 60, 30), (0.5, 0.5, 0.7)), ((32, 32, 8), (0.4, 0.4, 2.0))])
def test_ortho_and_mip_panels_keep_physical_aspect(shape, spacing):
    vol = np.random.default_rng(0).random(shape).astype(np.float32)
    lab = vol > 0.9
    for fig in (ortho_view(vol, lab, spacing), mip_view(vol, lab, spacing), error_view(lab, vol > 0.8, vol, spacing)):
        boxes = _boxes(fig)
        assert len(boxes) == 3
        for (w, h), (pw, ph_) in zip(boxes, _phys(shape, spacing)):
            assert w / h == pytest.approx(pw / ph_, rel=0.03)
        # panels share one mm -> pixel scale: widths in pixels are proportional to widths in mm
        scale = [w / pw for (w, _), (pw, _) in zip(boxes, _phys(shape, spacing))]
        assert max(scale) / min(scale) == pytest.approx(1.0, rel=0.03)

def test_ortho_view_shows_the_requested_voxel(ph):
    f = ortho_view(ph.image, ph.label, SP, index=(5, 7, 9), opacity=0, level=0.4, width=0.8)
    assert f.axes[0].images[0].get_array().shape == (60, 40, 3)              # axial: rows y, columns x
    np.testing.assert_allclose(f.axes[0].images[0].get_array(), slice_rgb(ph.image, None, 2, 9, level=0.4, width=0.8), atol=1e-6)
    assert [a.get_title() for a in f.axes] == ["axial 9", "coronal 7", "sagittal 5"]

@pytest.mark.parametrize("axis,wh,raster", [(2, (80, 120), (60, 40)), (1, (80, 84), (30, 40)), (0, (120, 84), (30, 60))])
def test_static_html_size_follows_spacing(ph, axis, wh, raster):
    v = VolumeView(ph.image, ph.label, SP, axis=axis, px_per_mm=4.0)
    assert v.display_size() == wh                               # e.g. coronal: 40 x 0.5 mm = 20 mm -> 80 px, 30 x 0.7 = 21 mm -> 84 px
    html = v.to_html()
    assert re.findall(r'<img[^>]*width="(\d+)" height="(\d+)"', html) == [tuple(map(str, wh))]
    assert v.frame(ph.image.shape[axis] // 2).shape == (*raster, 3)          # the PNG holds raw voxels; the <img> scales them

def test_static_html_caps(ph):
    big = np.random.default_rng(1).random((24, 24, 100)).astype(np.float32)     # noise: PNGs that do not compress
    v = VolumeView(big, spacing=SP)
    html = v.to_html()
    assert int(re.search(r'data-slices="(\d+)"', html)[1]) == 40 == len(v.slices())
    assert v.slices()[0] == 0 and v.slices()[-1] == 99
    for cap in (100_000, 30_000):
        html = VolumeView(big, spacing=SP, max_bytes=cap).to_html()
        n = int(re.search(r'data-slices="(\d+)"', html)[1])
        assert len(html.encode()) <= cap and 1 <= n < 40
        assert html.count("data:image/png;base64,") == 2      # the shown slice plus the script's list
    one = VolumeView(big, spacing=SP, max_bytes=10).to_html()  # cannot fit: one slice, never an empty viewer
    assert 'data-slices="1"' in one

def test_error_map_colours_hand_made():
    gt = np.array([[1, 1, 0, 0]], bool)
    pr = np.array([[1, 0, 1, 0]], bool)
    em = error_map(pr, gt)
    assert em.dtype == np.uint8 and em.shape == (1, 4, 3)
    assert em[0].tolist() == [[255, 0, 0], [255, 255, 0], [0, 255, 0], [0, 0, 0]]   # TP red, FN yellow, FP green, TN black
    assert ERROR_COLOURS == {"TP": (255, 0, 0), "FP": (0, 255, 0), "FN": (255, 255, 0)}
    img = np.array([[0.0, 0.0, 0.0, 0.5]])
    assert error_map(pr, gt, img, level=0.5, width=1.0)[0, 3].tolist() == [128, 128, 128]   # TN shows the image
    g3, p3 = np.zeros((3, 3, 3), bool), np.zeros((3, 3, 3), bool)
    g3[0, 0, 0] = p3[0, 0, 0] = True; p3[1, 1, 1] = True; g3[2, 2, 2] = True; g3[2, 2, 1] = True
    f = error_view(p3, g3, spacing=SP, index=(1, 1, 1))
    assert f.get_suptitle() == "TP 1  FP 1  FN 2  Dice 0.400"
    axial = f.axes[0].images[0].get_array()                     # slice z=1: FP at (1, 1), FN at (2, 2)
    assert np.allclose(axial[-1 - 1, 1], [0, 1, 0]) and np.allclose(axial[-1 - 2, 2], [1, 1, 0])
    proj = error_view(p3, g3, spacing=SP, project=True).axes[0].images[0].get_array()
    assert np.allclose(proj[-1 - 0, 0], [1, 0, 0]) and np.allclose(proj[-1 - 2, 2], [1, 1, 0])
    with pytest.raises(ValueError, match="differ in shape"): error_map(pr, gt[:, :2])

def test_vessel_mesh_in_millimetres():
    lab = np.zeros((12, 12, 12), np.uint8); lab[2:6, 3:9, 4:7] = 1
    v, f = vessel_mesh(lab, SP, smooth=0)
    np.testing.assert_allclose(v.min(0), [1.0, 1.5, 2.8], atol=1e-4)
    np.testing.assert_allclose(v.max(0), [3.0, 4.5, 4.9], atol=1e-4)
    assert f.shape[1] == 3 and f.max() < len(v)
    edge = np.zeros((4, 4, 4), np.uint8); edge[0] = 1                       # touches the border: still closed
    ve, _ = vessel_mesh(edge, (1, 1, 1), smooth=0)
    np.testing.assert_allclose(ve.min(0), [0, 0, 0], atol=1e-4)
    assert len(vessel_mesh(np.zeros((3, 3, 3)))[1]) == 0

def test_surface_and_fig4_render_to_png(ph, tmp_path):
    f = surface_view(ph.label, SP)
    box = np.asarray(f.axes[0].get_box_aspect())
    np.testing.assert_allclose(box / box[0], np.array([20, 30, 21]) / 20, rtol=1e-6)
    pairs = np.stack([np.stack([ph.image[:32, :32, :16] * 2 - 1, ph.label[:32, :32, :16]])] * 3)
    g = fig4_grid({"GP": pairs, "real": pairs}, SP, n=3)
    assert len(g.axes) == 2 * 3 * 3 and sum(a.name == "3d" for a in g.axes) == 6
    p = save_fig(g, tmp_path / "fig4.png", dpi=50)
    from PIL import Image
    assert np.allclose(Image.open(p).size, g.get_size_inches() * 50, atol=1)
    assert len(pair_grid({"a": pairs}, SP, n=2).axes) == 8

def test_widget_slider_changes_image(ph):
    pytest.importorskip("ipywidgets")
    w = VolumeView(ph.image, ph.label, SP).widget()
    (ax, sl), img = w.children[0].children, w.children[-1]
    first = bytes(img.value)
    sl.value = 3
    assert bytes(img.value) != first and bytes(img.value) == png_bytes(_resize(VolumeView(ph.image, ph.label, SP).frame(3), 120, 80))
    ax.value = 0                                                            # sagittal: 60 x 30 slices, 30 x 21 mm
    assert sl.max == 39 and (img.layout.width, img.layout.height) == ("120px", "84px")
    opacity = w.children[1].children[0]
    before = bytes(img.value); opacity.value = 0.0
    assert bytes(img.value) != before

def _resize(rgb, h, w):
    return rgb[np.arange(h) * rgb.shape[0] // h][:, np.arange(w) * rgb.shape[1] // w]

# Debian's chromium here; Google Chrome on GitHub's Ubuntu runners
CHROMIUM = next((b for b in ("/usr/bin/chromium", "/usr/bin/google-chrome") if Path(b).exists()), None)
HARNESS = """<script>window.addEventListener('load', function () {
  var m = location.hash.match(/s=(\\d+)/); if (!m) return;
  var inp = document.querySelector('.tof3dgan-view input');
  inp.value = m[1]; inp.dispatchEvent(new Event('input'));
});</script>"""

def _chromium(tmp_path, url, *flags):
    prof = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={prof}", "--virtual-time-budget=3000", *flags, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

@pytest.mark.skipif(CHROMIUM is None, reason="no headless browser (apt-get install chromium)")
def test_static_viewer_slider_in_headless_chromium(ph, tmp_path):
    v = VolumeView(ph.image, ph.label, SP, axis=2, title="phantom")
    page = tmp_path / "view.html"
    page.write_text(f"<!doctype html><html><body>{v.to_html()}{HARNESS}</body></html>")
    idx = v.slices()
    doms = {}
    for k in (3, 25):
        r = _chromium(tmp_path, f"{page.as_uri()}#s={k}", "--dump-dom")
        assert r.returncode == 0, r.stderr[-2000:]
        src = re.search(r'<img[^>]*src="data:image/png;base64,([^"]+)"', r.stdout)[1]
        shown = re.search(r'<span class="tv-idx">(\d+)</span>', r.stdout)[1]
        doms[k] = src
        assert int(shown) == idx[k]                                          # the caption follows the slider
        assert base64.b64decode(src) == png_bytes(v.frame(idx[k]))           # and so does the picture
    assert doms[3] != doms[25]
    shots = []
    for k in (3, 25):
        out = tmp_path / f"shot{k}.png"
        r = _chromium(tmp_path, f"{page.as_uri()}#s={k}", f"--screenshot={out}", "--window-size=400,360")
        assert r.returncode == 0 and out.exists(), r.stderr[-2000:]
        shots.append(out.read_bytes())
    assert shots[0] != shots[1]
