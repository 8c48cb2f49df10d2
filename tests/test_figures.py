"""Figures as a notebook user sees them: a notebook executed through a real Jupyter kernel (nbclient + ipykernel, as
JupyterLab and `jupyter nbconvert --execute` run it; no `%matplotlib inline`, no MPLBACKEND) must hold image outputs
for every figure the package returns, the live viewer widget for `VolumeView`, and notebook progress bars."""
import os, re
import pytest
from conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

WIDGET = "application/vnd.jupyter.widget-view+json"
SETUP = """import numpy as np
from tof3dgan.phantom import make_phantom
from tof3dgan.viz import ortho_view, mip_view, pair_grid, fig4_grid, surface_view, error_view, loss_figure, VolumeView
ph = make_phantom((40, 48, 24), seed=0)
pairs = np.stack([np.stack([ph.image[:32, :32, :16] * 2 - 1, ph.label[:32, :32, :16]])] * 2)"""
FIGURES = {
    "ortho_view": "ortho_view(ph.image, ph.label, ph.spacing, title='a phantom')",
    "mip_view": "mip_view(ph.image, ph.label, ph.spacing)",
    "pair_grid": "pair_grid({'real': pairs}, ph.spacing, n=2)",
    "fig4_grid": "fig4_grid({'real': pairs}, ph.spacing, n=2)",
    "surface_view": "surface_view(ph.label, ph.spacing)",
    "error_view": "error_view(ph.label, ph.label, ph.image, ph.spacing)",
    "loss_figure": "loss_figure([{'step': i, 'loss_d': -i, 'loss_g': i, 'wdist': i, 'gp': 0.1} for i in range(5)])",
}

def _execute(cells, tmp_path):
    "Run code cells in a fresh python3 kernel as JupyterLab would (the user's environment: no MPLBACKEND, no IN_TEST)."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "IN_TEST")}
    old = dict(os.environ)
    os.environ.clear(); os.environ.update(env)                  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.clear(); os.environ.update(old)
    return nb

def test_figures_viewer_and_progress_bars_in_a_real_kernel(tmp_path):
    cells = [SETUP, *FIGURES.values(),
             "VolumeView(ph.image, ph.label, ph.spacing)",
             "from tof3dgan.data.store import tqdm\nfor _ in tqdm(range(3), desc='steps'): pass\n[c.__module__ for c in tqdm.__mro__]"]
    nb = _execute(cells, tmp_path)
    out = {i: c.outputs for i, c in enumerate(nb.cells)}
    assert not [o for os_ in out.values() for o in os_ if o.output_type == "error"]
    missing = [name for i, name in enumerate(FIGURES, 1) if not any("image/png" in o.get("data", {}) for o in out[i])]
    assert not missing, f"shown as text only: {missing}: {[out[i] for i, n in enumerate(FIGURES, 1) if n in missing]}"
    view = out[len(FIGURES) + 1]
    data = next(o.data for o in view if o.output_type == "execute_result")
    assert WIDGET in data and "tof3dgan-view" in data["text/html"]          # the live widget, the static one as fallback
    bar = out[len(FIGURES) + 2]
    assert any(WIDGET in o.get("data", {}) for o in bar), f"tqdm did not draw a notebook progress bar: {bar}"
    assert "tqdm.notebook" in str(next(o.data["text/plain"] for o in bar if o.output_type == "execute_result"))

def test_plot_prd_shows_in_a_real_kernel(tmp_path):
    nb = _execute(["import numpy as np\nfrom tof3dgan.metrics.prd import prd, plot_prd\nx = np.random.default_rng(0).normal(size=(60, 4))",
                   "plot_prd({'shifted': prd(x, x + 0.5, num_clusters=5, num_runs=1)}, 'PRD vs real (MedicalNet ResNet-10, random init)')"],
                  tmp_path)
    assert any("image/png" in o.get("data", {}) for o in nb.cells[1].outputs), nb.cells[1].outputs

def test_progress_bars_use_tqdm_auto():
    "Every progress bar of the package comes from tqdm.auto, which draws a notebook (widget) bar in Jupyter, text elsewhere."
    plain = [f"{p.relative_to(ROOT)}: {line.strip()}" for p in (ROOT / "tof3dgan").rglob("*.py")
             for line in p.read_text().splitlines()
             if re.match(r"\s*(from tqdm(\.std)? import|import tqdm\s*$)", line)]
    assert not plain, f"use `from tqdm.auto import tqdm`: {plain}"

def test_no_module_builds_a_bare_figure():
    "Every figure the package makes is a core.InlineFigure (a bare matplotlib Figure shows as text in a notebook)."
    bare = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in (ROOT / "tof3dgan").rglob("*.py") if p.name != "_modidx.py"
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"(?<![\w.])Figure\(|plt\.(figure|subplots)\(", line)]
    assert not bare, f"make these figures with core.InlineFigure: {bare}"
