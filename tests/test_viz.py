"Viewers: sizes follow the voxel spacing, MIPs are maxima, error-map colours, the static HTML cap, and the slider in a real browser."
import base64, re, shutil, subprocess
from pathlib import Path
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from tof3dgan.phantom import make_phantom
from tof3dgan.viz import (ERROR_COLOURS, InlineFigure, VolumeView, error_map, loss_figure, error_view, fig4_grid, mip, mip_view, ortho_view,
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
    for cap in (60_000, 30_000):
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
    w, h = Image.open(p).size                                           # cut to the drawn content: a little smaller
    assert np.all(np.array([w, h]) <= g.get_size_inches() * 50 + 1) and np.all(np.array([w, h]) >= g.get_size_inches() * 50 * 0.8)
    assert len(pair_grid({"a": pairs}, SP, n=2).axes) == 8

LONG = "a title much longer than a narrow figure is wide, which used to be cut at the figure's edge"

def _figures(ph):
    pairs = np.stack([np.stack([ph.image[:32, :32, :16] * 2 - 1, ph.label[:32, :32, :16]])] * 2)
    hist = [{"step": i, "loss_d": -i, "loss_g": i, "wdist": i, "gp": 0.1} for i in range(5)]
    return {"ortho_view": ortho_view(ph.image, ph.label, SP, title=LONG), "mip_view": mip_view(ph.image, ph.label, SP, title=LONG),
            "error_view": error_view(ph.label, ph.label, ph.image, SP, title=LONG),
            "pair_grid": pair_grid({"a": pairs}, SP, n=1, title=LONG), "fig4_grid": fig4_grid({"a": pairs}, SP, n=1, title=LONG),
            "surface_view": surface_view(ph.label, SP, title=LONG), "loss_figure": loss_figure(hist)}

def test_every_figure_shows_as_an_image_without_magic(ph):
    "A fresh IPython formatter (no %matplotlib inline, no pyplot) gets a PNG of each figure, its title whole."
    from IPython.core.formatters import DisplayFormatter
    from PIL import Image
    import io, sys
    fmt, wider = DisplayFormatter(), 0
    for name, fig in _figures(ph).items():
        assert isinstance(fig, InlineFigure), name
        data, _ = fmt.format(fig)
        assert "image/png" in data, f"{name} shows only as text: {data.get('text/plain')}"
        png = Image.open(io.BytesIO(data["image/png"]))
        FigureCanvasAgg(fig).draw()
        tight = fig.get_tightbbox(fig.canvas.get_renderer())                        # inches, titles included
        assert png.size[0] >= 0.97 * tight.width * InlineFigure.repr_dpi, (name, png.size, tight.bounds)
        assert png.size[1] >= 0.97 * tight.height * InlineFigure.repr_dpi, (name, png.size, tight.bounds)
        wider += tight.width > fig.get_size_inches()[0] + 0.5                 # its title overflows the figure itself
    assert wider >= 1                                                         # so the check above means something
    assert "matplotlib.pyplot" not in sys.modules or not __import__("matplotlib.pyplot").pyplot.get_fignums()

def test_save_fig_keeps_a_long_title_whole(ph, tmp_path):
    from PIL import Image
    fig = surface_view(ph.label, SP, title=LONG)                       # 4 in wide; the title is wider
    FigureCanvasAgg(fig).draw()
    tight = fig.get_tightbbox(fig.canvas.get_renderer())
    assert tight.width > fig.get_size_inches()[0]
    w, h = Image.open(save_fig(fig, tmp_path / "s.png", dpi=50)).size
    assert w > 1.25 * fig.get_size_inches()[0] * 50 and w >= 0.95 * tight.width * 50     # wider than the figure: not cut

def test_widget_three_planes_linked_cursor(ph):
    pytest.importorskip("ipywidgets")
    v = VolumeView(ph.image, ph.label, SP, opacity=0.5)
    w = v.widget()
    assert sorted(w.images) == ["axial", "coronal", "sagittal"] and {"x", "y", "z", "view", "overlay", "opacity", "mode",
                                                                     "level", "width", "cross"} <= set(w.controls)
    png = lambda: {k: bytes(im.value) for k, im in w.images.items()}
    first = png()
    w.controls["z"].value = 3                                          # axial plane moves; crosshairs move in the others
    now = png()
    assert all(now[k] != first[k] for k in now)
    assert now["axial"] == png_bytes(v.panel("axial"), fast=True)
    ax = v.panel("axial", cross=False)
    assert np.abs(ax.astype(int) - np.rint(v.frame(3, 2) * 255)).max() <= 1                 # the slice the slider names
    cor = v.panel("coronal")
    assert (cor[cor.shape[0] - 1 - 3] == (0, 255, 255)).all()                   # coronal: the z = 3 line in cyan
    sag = v.panel("sagittal")
    assert (sag[:, v.cursor[1]] == (0, 255, 255)).all() and (sag[sag.shape[0] - 1 - 3] == (0, 255, 255)).all()
    # panels keep the physical aspect: 20 x 30 mm axial, 20 x 21 mm coronal, 30 x 21 mm sagittal at one px/mm scale
    sizes = {k: (int(im.layout.width[:-2]), int(im.layout.height[:-2])) for k, im in w.images.items()}
    assert sizes == {"axial": (80, 120), "coronal": (80, 84), "sagittal": (120, 84)}
    for key in ("opacity", "level", "width"):                           # every control redraws
        before = png()["axial"]
        w.controls[key].value = w.controls[key].min if key != "width" else w.controls[key].max
        assert png()["axial"] != before, key
    before = png()["axial"]; w.controls["cross"].value = False
    assert png()["axial"] != before and png()["axial"] == png_bytes(v.panel("axial", cross=False), fast=True)

def test_widget_overlay_toggle_and_mip(ph):
    pytest.importorskip("ipywidgets")
    v = VolumeView(ph.image, ph.label, SP, opacity=1.0)
    w = v.widget(); w.controls["cross"].value = False
    z = int(np.argmax(ph.label.sum((0, 1)))); w.controls["z"].value = z
    on = v.panel("axial", cross=False)
    w.controls["overlay"].value = False
    off = v.panel("axial", cross=False)
    m = _disp_mask(ph.label[:, :, z])
    assert m.any() and (on[m] == (255, 38, 26)).all() and not (off[m] == (255, 38, 26)).all(axis=-1).any()
    w.controls["overlay"].value = True; w.controls["view"].value = "mip"
    mp = v.panel("axial", cross=False)                                 # the MIP: maxima along z, label MIP on top
    lab_mip = _disp_mask(ph.label.max(2))
    assert (mp[lab_mip] == (255, 38, 26)).all()
    want = np.rint(np.clip((ph.image.max(2) - (v.level - v.width / 2)) / v.width, 0, 1) * 255).T[::-1]
    assert np.abs(mp[~lab_mip][:, 0].astype(int) - want[~lab_mip]).max() <= 1
    before = bytes(w.images["axial"].value); w.controls["z"].value = 0
    assert bytes(w.images["axial"].value) == before                    # in MIP view the z slider moves only the cursor

def _disp_mask(m2d):
    return (np.asarray(m2d) > 0.5).T[::-1]

def test_widget_error_map_mode_colours():
    pytest.importorskip("ipywidgets")
    gt = np.zeros((6, 5, 4), bool); pr = np.zeros_like(gt)
    gt[1, 1, 2] = pr[1, 1, 2] = True; pr[2, 3, 2] = True; gt[4, 0, 2] = True          # TP, FP, FN on slice z=2
    gt[3, 3, 0] = True; pr[3, 3, 3] = True                                             # on one ray: FN wins in the MIP
    img = np.zeros(gt.shape, np.float32)
    v = VolumeView(img, gt, (1, 1, 1), pred=pr, opacity=1.0, level=0.5, width=1.0)
    assert v.show == "errors"
    w = v.widget(); w.controls["cross"].value = False; w.controls["z"].value = 2
    a = v.panel("axial", cross=False)
    px = lambda x, y: a[a.shape[0] - 1 - y, x].tolist()
    assert px(1, 1) == [255, 0, 0] and px(2, 3) == [0, 255, 0] and px(4, 0) == [255, 255, 0] and px(0, 0) == [0, 0, 0]
    w.controls["show"].value = "label"
    assert v.panel("axial", cross=False)[a.shape[0] - 1 - 3, 2].tolist() == [0, 0, 0]   # FP is not in the label
    w.controls["show"].value = "errors"; w.controls["view"].value = "mip"
    m = v.panel("axial", cross=False)
    assert m[m.shape[0] - 1 - 3, 3].tolist() == [255, 255, 0]                         # FN over FP on the same ray
    assert m[m.shape[0] - 1 - 1, 1].tolist() == [255, 0, 0] and m[m.shape[0] - 1 - 3, 2].tolist() == [0, 255, 0]
    with pytest.raises(ValueError, match="ground truth"): VolumeView(img, pred=pr)
    with pytest.raises(ValueError, match="show must be"): VolumeView(img, gt, show="errors")

def test_live_kernel_gets_the_widget_and_keeps_the_static_fallback(ph, monkeypatch):
    pytest.importorskip("ipywidgets")
    import tof3dgan.viz as viz
    v = VolumeView(ph.image, ph.label, SP)
    assert set(v._repr_mimebundle_()) == {"text/plain", "text/html"}          # no kernel: the static viewer alone
    monkeypatch.setattr(viz, "_live_kernel", lambda: True)
    b = v._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in b and "tof3dgan-view" in b["text/html"]

def test_widget_step_on_a_whole_volume_is_fast():
    "512x512x100: one z step (the 512x512 axial plane) well under the 50 ms goal on an idle core; 250 ms allows for load."
    pytest.importorskip("ipywidgets")
    import time
    vol = np.random.default_rng(0).random((512, 512, 100), dtype=np.float32)
    w = VolumeView(vol, vol > 0.97, SP, pred=vol > 0.96).widget()
    ts = []
    for k in range(1, 8):
        t = time.perf_counter(); w.controls["z"].value = 10 * k; ts.append(time.perf_counter() - t)
    assert sorted(ts)[len(ts) // 2] < 0.25, ts

def test_fast_png_round_trips():
    from PIL import Image
    import io
    rng = np.random.default_rng(0)
    for a in (rng.integers(0, 256, (7, 5, 3), dtype=np.uint8), rng.integers(0, 256, (4, 9), dtype=np.uint8)):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(a, fast=True)))), a)

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
