"The docs site without Quarto: every notebook goes through nbdev's docs processing, and the static viewer survives it."
import json, os, shutil, subprocess, sys
import pytest
from conftest import ROOT

nbdev = pytest.importorskip("nbdev")
yaml = pytest.importorskip("yaml")

def _copy_project(dst):
    "pyproject.toml and nbs/ in `dst`, so nbdev writes its _proc folder there and not into the checkout."
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    shutil.copytree(ROOT / "nbs", dst / "nbs", ignore=shutil.ignore_patterns("_proc", "_docs", ".ipynb_checkpoints", "_out"))
    return dst

def _proc(cwd, file_glob=""):
    code = f"from nbdev.serve import proc_nbs; proc_nbs('nbs', n_workers=2, file_glob={file_glob!r})"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)

def _notebooks(nbs):
    return sorted(p.relative_to(nbs) for p in nbs.rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(nbs).parts))

def _sidebar_entries(node):
    if isinstance(node, str): yield node
    elif isinstance(node, list):
        for x in node: yield from _sidebar_entries(x)
    elif isinstance(node, dict):
        if "href" in node: yield node["href"]
        yield from _sidebar_entries(node.get("contents", []))

def test_all_notebooks_process_for_docs(tmp_path):
    "`nbdev-proc-nbs` minus its Quarto install step: each notebook must come out in _proc/, ready for `quarto render`."
    _copy_project(tmp_path)
    r = _proc(tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    missing = [str(p) for p in _notebooks(tmp_path / "nbs") if not (tmp_path / "_proc" / p).exists()]
    assert not missing, f"docs processing failed for {missing}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    for f in ("_quarto.yml", "sidebar.yml", "nbdev.yml"): assert (tmp_path / "_proc" / f).exists(), f
    side = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())
    absent = [e for e in _sidebar_entries(side["website"]["sidebar"]["contents"]) if not (ROOT / "nbs" / e).exists()]
    assert not absent, f"sidebar.yml names notebooks that do not exist: {absent}"

def test_static_viewer_survives_docs_processing(tmp_path):
    "Run the viz notebook as CI would (IN_TEST), keep its outputs, process it for the docs: the slider viewer is still there."
    _copy_project(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["nbdev-test", "--save", "nbs/api/07_viz.ipynb"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    r = _proc(tmp_path, "07_viz*")
    out = tmp_path / "_proc" / "api" / "07_viz.ipynb"
    assert out.exists(), r.stderr[-3000:]
    nb = json.loads(out.read_text())
    views = ["".join(o["data"]["text/html"]) for c in nb["cells"] for o in c.get("outputs", [])
             if "text/html" in o.get("data", {}) and "tof3dgan-view" in "".join(o["data"]["text/html"])]
    assert len(views) >= 2
    for v in views:
        assert '<input type="range"' in v and "<script>" in v and "data:image/png;base64," in v
        assert len(v.encode()) <= 1_500_000
    assert any('width="128" height="90"' in v for v in views)     # the coronal phantom view: 32 x 22.4 mm at 4 px/mm
