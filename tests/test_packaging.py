"""`pip install tof3dgan` as a user would: the sdist and wheel built by `python -m build`, the wheel installed into a
fresh venv outside the checkout, its command and every module used from there; what the wheel holds (package data,
no tests or notebooks); the metadata a package index shows; and the [notebooks] extra covering every notebook."""
import ast, email, fcntl, json, os, re, shutil, subprocess, sys, tarfile, zipfile
from importlib import metadata
from pathlib import Path
import pytest
from conftest import ROOT

PKG = ROOT / "tof3dgan"
IGNORE = shutil.ignore_patterns(".git", "build", "dist", "_proc", "_docs", ".pytest_cache", "*.egg-info", "__pycache__",
                                ".benchmarks", ".ipynb_checkpoints", "*.pyc", "tof3dgan-demo", "runs")

def _modules() -> list:
    "Every module of the package in the checkout, dotted."
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in PKG.rglob("*.py")
                  if "__pycache__" not in p.parts and p.name != "__main__.py")

def _shared(tmp_path_factory, name: str) -> Path:
    "A folder for the whole run, shared by the pytest-xdist workers (so that the build and the venv are made once)."
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    d = tmp_path_factory.getbasetemp().parent / f"{name}-{run}" if run else tmp_path_factory.getbasetemp() / name
    d.mkdir(parents=True, exist_ok=True)
    return d

@pytest.fixture(scope="session")
def dist(tmp_path_factory):
    "sdist and wheel from `python -m build` on a copy of the checkout (the build writes egg-info next to the sources)."
    pytest.importorskip("build")
    d = _shared(tmp_path_factory, "tof3dgan-pkg")
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (d / "built.json").exists():
            shutil.rmtree(d / "src", ignore_errors=True); shutil.rmtree(d / "dist", ignore_errors=True)
            shutil.copytree(ROOT, d / "src", ignore=IGNORE)
            r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(d / "dist"), str(d / "src")], capture_output=True,
                               text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
            (d / "built.json").write_text(json.dumps({"rc": r.returncode, "log": r.stdout[-3000:] + r.stderr[-3000:]}))
        built = json.loads((d / "built.json").read_text())
    assert built["rc"] == 0, built["log"]
    (whl,), (sdist,) = (d / "dist").glob("*.whl"), (d / "dist").glob("*.tar.gz")
    return {"dir": d, "wheel": whl, "sdist": sdist}

def _site_packages(python) -> str:
    return subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()

@pytest.fixture(scope="session")
def venv(dist, tmp_path_factory):
    """A new venv outside the checkout with the wheel installed by pip. To stay fast and offline its dependencies come
    from this environment: a .pth line appends this interpreter's site-packages as a plain folder, so the checkout's
    editable install (a .pth import hook) is not loaded and `tof3dgan` can only come from the wheel."""
    root = _shared(tmp_path_factory, "tof3dgan-venv")
    d = root / "v"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "ready").exists():
            shutil.rmtree(d, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(d)], check=True, timeout=300)
            py = d / "bin" / "python"
            r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(dist["wheel"])],
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stdout + r.stderr
            Path(_site_packages(py), "_host_site_packages.pth").write_text(_site_packages(sys.executable) + "\n")
            (root / "ready").write_text("")
    return d

def _run(venv, *args, timeout=300, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MPLBACKEND")}
    env.update(OMP_NUM_THREADS="1", MPLBACKEND="Agg", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=kw.get("cwd", venv), **{k: v for k, v in kw.items() if k != "cwd"})

@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(dist, venv):
    py, exe = venv / "bin" / "python", venv / "bin" / "tof3dgan"
    assert exe.exists(), "the wheel installed no `tof3dgan` command"
    r = _run(venv, exe, "demo", "--help")
    assert r.returncode == 0 and "usage" in r.stdout.lower(), r.stdout + r.stderr
    r = _run(venv, exe, "presets")
    assert r.returncode == 0 and all(p in r.stdout for p in ("paper_gp", "paper_sn_mp", "quick", "demo")), r.stdout + r.stderr
    code = ("import importlib, json, tof3dgan, importlib.metadata as md; mods = json.loads(input());"
            "[importlib.import_module(m) for m in mods];"
            "print(json.dumps({'file': tof3dgan.__file__, 'version': md.version('tof3dgan'), 'n': len(mods)}))")
    r = _run(venv, py, "-c", code, input=json.dumps(_modules()))
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).resolve().is_relative_to(venv.resolve()), f"tof3dgan came from {got['file']}, not the wheel"
    assert got["n"] == len(_modules()) and got["version"] == metadata.version("tof3dgan")

@pytest.mark.slow
def test_wheel_requirements_are_satisfied(dist, venv):
    "What the wheel declares (Requires-Dist, no extras) is installed at a version it accepts: pip check, in effect."
    code = """
import sys, importlib.metadata as md
from packaging.requirements import Requirement
bad = []
for line in md.metadata('tof3dgan').get_all('Requires-Dist'):
    req = Requirement(line)
    if req.marker and not req.marker.evaluate({'extra': ''}): continue
    try: v = md.version(req.name)
    except md.PackageNotFoundError: bad.append(f'{req}: not installed'); continue
    if v not in req.specifier: bad.append(f'{req}: {v} installed')
print(bad); sys.exit(1 if bad else 0)"""
    r = _run(venv, venv / "bin" / "python", "-c", code)
    assert r.returncode == 0, r.stdout + r.stderr

def test_wheel_holds_the_package_and_its_data_and_nothing_else(dist):
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    want_py = {str(p.relative_to(ROOT)) for p in PKG.rglob("*.py") if "__pycache__" not in p.parts}
    assert not want_py - set(names), f"modules missing from the wheel: {sorted(want_py - set(names))}"
    data = {str(p.relative_to(ROOT)) for p in PKG.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts}
    assert not data - set(names), f"package data missing from the wheel: {sorted(data - set(names))}"
    if (PKG / "models").is_dir():                                               # the shipped generator
        assert any(n.startswith("tof3dgan/models/") and n.endswith(".safetensors") for n in names)
    stray = [n for n in names if not n.startswith(("tof3dgan/", "tof3dgan-")) or n.endswith((".ipynb", ".pyc"))]
    assert not stray, f"the wheel holds files that are not the package: {stray[:20]}"
    assert not [n for n in names if re.match(r"tof3dgan/(tests|nbs|bench)/", n)]
    sdist = tarfile.open(dist["sdist"]).getnames()
    assert not [n for n in sdist if re.search(r"/(tests|nbs|bench|\.github|\.ci)/", n)], "the sdist holds tests or notebooks"
    for f in ("pyproject.toml", "README.md", "LICENSE", "tof3dgan/__init__.py"):
        assert any(n.endswith("/" + f) for n in sdist), f"{f} missing from the sdist"

def test_wheel_metadata_is_complete_for_a_package_index(dist):
    z = zipfile.ZipFile(dist["wheel"])
    meta = email.message_from_bytes(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))))
    assert meta["Name"] == "tof3dgan" and meta["Version"] and meta["Summary"] and meta["Requires-Python"]
    assert meta["License-Expression"] == "Apache-2.0" and "LICENSE" in (meta.get_all("License-File") or [])
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in z.namelist())
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Repository", "Issues"} <= set(urls), urls
    cls = meta.get_all("Classifier")
    assert any(c.startswith("Development Status") for c in cls) and "Programming Language :: Python :: 3.11" in cls
    assert not any(c.startswith("License ::") for c in cls)               # PEP 639: the licence expression says it
    assert meta["Description-Content-Type"] == "text/markdown" and "## Set up" in meta.get_payload()
    assert "tof3dgan = tof3dgan.cli:main" in z.read(next(n for n in z.namelist() if n.endswith("entry_points.txt"))).decode()

# ----------------------------------------------------------------------------------- the [notebooks] extra is enough
def _declared(extras=("notebooks",)) -> set:
    "Distributions installed by `pip install tof3dgan[notebooks]`: declared ones and what they require, recursively."
    from packaging.requirements import Requirement
    import tomllib
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in proj["dependencies"]] + [Requirement(r) for e in extras for r in proj["optional-dependencies"][e]]
    seen = set()
    while todo:
        req = todo.pop()
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen or name == "tof3dgan": continue
        seen.add(name)
        try: reqs = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError: continue
        for r in map(Requirement, reqs):
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ["", *req.extras]): todo.append(r)
    return seen

def _notebook_imports() -> dict:
    "Top-level modules imported by the notebooks' code cells: {module: [notebooks]}."
    found = {}
    for nb in sorted((ROOT / "nbs").rglob("*.ipynb")):
        if any(p.startswith(("_", ".")) for p in nb.relative_to(ROOT / "nbs").parts): continue
        for c in json.loads(nb.read_text())["cells"]:
            if c["cell_type"] != "code": continue
            src = "\n".join(l for l in "".join(c["source"]).splitlines() if not l.lstrip().startswith(("%", "!")))
            try: tree = ast.parse(src)
            except SyntaxError: continue
            for n in ast.walk(tree):
                mods = ([a.name for a in n.names] if isinstance(n, ast.Import) else
                        [n.module] if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module else [])
                for m in mods: found.setdefault(m.split(".")[0], set()).add(str(nb.relative_to(ROOT)))
    return found

def test_notebooks_extra_covers_every_notebook_import():
    "Each module a notebook imports is the standard library, tof3dgan, a local helper, or installed by [notebooks]."
    local = {p.stem for d in ("bench", "nbs", "tools") for p in (ROOT / d).rglob("*.py")}
    dists, declared, missing = metadata.packages_distributions(), _declared(), {}
    imports = _notebook_imports()
    assert {"numpy", "tof3dgan", "fastcore"} <= set(imports)               # the parser sees the notebooks' imports
    for mod, nbs in imports.items():
        if mod in sys.stdlib_module_names or mod == "tof3dgan" or mod in local: continue
        names = {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(mod, [])}
        if not names & declared: missing[mod] = (sorted(names) or ["not installed here"], sorted(nbs)[:3])
    assert not missing, ("imported by notebooks but not installed by `pip install tof3dgan[notebooks]` "
                         f"(module: (distribution, notebooks)): {missing}")

@pytest.mark.slow
def test_a_notebook_runs_in_the_wheel_venv(venv, tmp_path):
    "The tour notebook, executed by a kernel of the venv's own Python (nbconvert, as `jupyter nbconvert --execute`)."
    pytest.importorskip("nbconvert"); pytest.importorskip("ipykernel")
    src = json.loads((ROOT / "nbs" / "index.ipynb").read_text())
    src["cells"].append({"cell_type": "code", "execution_count": None, "id": "probe", "metadata": {}, "outputs": [],
                         "source": ["import sys, tof3dgan\n", "print(sys.prefix, tof3dgan.__file__)"]})
    nb = tmp_path / "index.ipynb"
    nb.write_text(json.dumps(src))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MPLBACKEND")}
    env.update(OMP_NUM_THREADS="1", IN_TEST="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "nbconvert", "--to", "notebook", "--execute", "--inplace",
                        "--ExecutePreprocessor.timeout=300", "--ExecutePreprocessor.kernel_name=python3", str(nb)],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    out = json.loads(nb.read_text())
    assert not [o for c in out["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for c in out["cells"] for o in c.get("outputs", [])) >= 2
    prefix, path = "".join(out["cells"][-1]["outputs"][0]["text"]).split()
    assert Path(prefix) == venv and Path(path).is_relative_to(venv), (prefix, path)   # the kernel ran the wheel's tof3dgan
