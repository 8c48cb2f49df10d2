"""The docs site without Quarto. Quarto cannot be installed on the project's machines, so the deploy workflow
(.github/workflows/deploy.yaml) is the only place the site is rendered; here its inputs are built the same way and
checked: every notebook executes under `nbdev-test --save` and goes through nbdev's docs processing, the sidebar names
exactly the notebooks there are, every internal link resolves, every figure a page shows is an image, and each page,
exported to HTML by nbconvert, opens in headless Chromium with no broken image and a working static slice viewer."""
import ast, fcntl, json, os, re, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT

nbdev = pytest.importorskip("nbdev")
yaml = pytest.importorskip("yaml")
from nbdev.doclinks import nbpath2html

SITE_URL = "https://tof3dgan.github.io/tof3dgan/"
REPO_URL = "https://github.com/tof3dgan/tof3dgan/"
SKIP_FLAGS = {"notest", "slow", "cuda"}                       # tst_flags: cells nbdev-test does not run

def _copy_project(dst):
    "pyproject.toml and nbs/ in `dst`, so nbdev writes its _proc folder there and not into the checkout."
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    shutil.copytree(ROOT / "nbs", dst / "nbs", ignore=shutil.ignore_patterns("_proc", "_docs", ".ipynb_checkpoints", "_out"))
    return dst

def _proc(cwd, file_glob=""):
    code = f"from nbdev.serve import proc_nbs; proc_nbs('nbs', n_workers=2, file_glob={file_glob!r})"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)

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

def _shared_dir(tmp_path_factory) -> Path:
    "One folder for the whole test run, shared by pytest-xdist workers, so that the site is built once."
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = tmp_path_factory.getbasetemp()
    d = base.parent / f"tof3dgan-site-{run}" if run else base / "tof3dgan-site"
    d.mkdir(parents=True, exist_ok=True)
    return d

def _build(d: Path) -> dict:
    "What the deploy workflow does before Quarto: nbdev-test --save on every notebook, then nbdev's docs processing."
    _copy_project(d)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t = subprocess.run(["nbdev-test", "--n-workers", "2", "--timing", "--save"], cwd=d / "nbs", capture_output=True, text=True,
                       env=env, timeout=1500)
    p = _proc(d)
    return {"test_rc": t.returncode, "test_out": t.stdout[-3000:] + t.stderr[-6000:],
            "proc_rc": p.returncode, "proc_out": p.stdout[-3000:] + p.stderr[-3000:]}

@pytest.fixture(scope="session")
def site(tmp_path_factory):
    "The executed, processed site inputs (folder with nbs/ and _proc/) and the two steps' results; built once per run."
    d = Path(os.environ["TOF3DGAN_DOCS_SITE"]) if os.environ.get("TOF3DGAN_DOCS_SITE") else _shared_dir(tmp_path_factory)
    d.mkdir(parents=True, exist_ok=True)                      # (TOF3DGAN_DOCS_SITE: reuse a built folder while editing)
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = d / "build.json"
        if not done.exists(): done.write_text(json.dumps(_build(d)))
        res = json.loads(done.read_text())
    return {"root": d, **res}

def _executed(site):
    "The notebooks as nbdev-test --save left them (outputs kept): {relative path: notebook JSON}."
    return {p: json.loads((site["root"] / "nbs" / p).read_text()) for p in _notebooks(site["root"] / "nbs")}

# ---------------------------------------------------------------------------------------------- notebooks and sidebar
def test_every_notebook_executes_and_processes_for_the_docs(site):
    "`nbdev-test --save` (as the deploy workflow runs it) and `nbdev-proc-nbs` minus Quarto: every page comes out in _proc/."
    assert site["test_rc"] == 0, site["test_out"]
    assert site["proc_rc"] == 0, site["proc_out"]
    missing = [str(p) for p in _notebooks(site["root"] / "nbs") if not (site["root"] / "_proc" / p).exists()]
    assert not missing, f"docs processing failed for {missing}:\n{site['proc_out']}"
    for f in ("_quarto.yml", "sidebar.yml", "nbdev.yml"): assert (site["root"] / "_proc" / f).exists(), f

def test_sidebar_names_exactly_the_notebooks():
    side = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())
    entries = list(_sidebar_entries(side["website"]["sidebar"]["contents"]))
    absent = [e for e in entries if not (ROOT / "nbs" / e).exists()]
    assert not absent, f"sidebar.yml names notebooks that do not exist: {absent}"
    unlisted = [str(p) for p in _notebooks(ROOT / "nbs") if str(p) not in entries]
    assert not unlisted, f"notebooks missing from nbs/sidebar.yml (no page links to them): {unlisted}"
    assert len(entries) == len(set(entries)), "sidebar.yml lists a page twice"

# ---------------------------------------------------------------------------------------------------------- links
def _page_of(proc: Path, nb: Path) -> str:
    "Site path of a processed notebook: its front matter's output-file, or nbdev's name for it."
    src = json.loads((proc / nb).read_text())["cells"]
    fm = "".join(src[0]["source"]) if src and src[0]["cell_type"] == "raw" else ""
    m = re.search(r"^output-file:\s*(\S+)", fm, re.M)
    return str(nb.parent / m[1]) if m else str(nbpath2html(nb))

_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|(?:href|src)=[\"']([^\"']+)[\"']")

def _markdown(nb) -> list:
    "Markdown text of a notebook: markdown cells and markdown outputs (show_doc's)."
    out = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]
    out += ["".join(o["data"]["text/markdown"]) for c in nb["cells"] for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]
    return out

def _anchors(nb) -> set:
    "Heading ids a page will have (pandoc's: lower case, spaces to hyphens), and explicit {#id}s."
    ids = set()
    for md in _markdown(nb):
        for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", md, re.M):
            explicit = re.search(r"\{#([^}\s]+)", h)
            if explicit: ids.add(explicit[1])
            t = re.sub(r"\{.*?\}", "", h).strip().lower().replace("`", "")
            ids |= {t, re.sub(r"[^\w\s.-]", "", t).replace(" ", "-")}
    return ids

def _links(site):
    "(links checked, links to missing pages or files, links to missing headings) over every processed page."
    proc = site["root"] / "_proc"
    nbs = [p for p in _notebooks(site["root"] / "nbs") if (proc / p).exists()]
    assert nbs, "no processed notebooks"
    pages = {_page_of(proc, p): json.loads((proc / p).read_text()) for p in nbs}
    bad, bad_anchor, checked = [], [], 0
    for src_nb in nbs:
        here = Path(_page_of(proc, src_nb)).parent
        for md in _markdown(json.loads((proc / src_nb).read_text())):
            for a, b in _LINK.findall(md):
                href = a or b
                if href.startswith(REPO_URL + "blob/main/"):          # [source] links of show_doc
                    path = href[len(REPO_URL + "blob/main/"):].split("#")[0]
                    checked += 1
                    if not (ROOT / path).exists(): bad.append(f"{src_nb}: {href} (no {path} in the repository)")
                    continue
                if href.startswith(SITE_URL): target = href[len(SITE_URL):]
                elif re.match(r"^[a-z][a-z0-9+.-]*:", href) or href.startswith(("#", "//", "{")): continue
                else: target = os.path.normpath(str(here / href))
                path, _, anchor = target.partition("#")
                checked += 1
                if path.endswith(".ipynb"): path = _page_of(proc, Path(path)) if (proc / path).exists() else path
                if path in pages:
                    if anchor and anchor.lower() not in {x.lower() for x in _anchors(pages[path])}:
                        bad_anchor.append(f"{src_nb}: {href} (no heading #{anchor} on {path})")
                elif not (site["root"] / "nbs" / path).exists():
                    bad.append(f"{src_nb}: {href} (no page or file {path})")
    return checked, bad, bad_anchor

def test_internal_links_resolve(site):
    "Links between pages (relative, or to the site's own URL, as nbdev writes API links), to files, and to source files."
    checked, bad, _ = _links(site)
    assert checked > 20, f"only {checked} internal links found: is the link parser broken?"
    assert not bad, "broken internal links:\n" + "\n".join(bad)

def test_internal_link_anchors_resolve(site):
    "A link to a page's section needs that heading: nbdev links `name` in prose to name's show_doc; without one, none."
    _, _, bad_anchor = _links(site)
    assert not bad_anchor, ("links to sections that do not exist (show_doc the name, or drop the backticks):\n"
                            + "\n".join(bad_anchor))

# -------------------------------------------------------------------------------------------------------- figures
def _flags(src: str) -> set:
    return {w for line in src.splitlines() if line.startswith("#|") for w in line[2:].split()}

FIGURES = {"ortho_view", "mip_view", "pair_grid", "fig4_grid", "surface_view", "error_view", "loss_figure", "plot_prd"}

def _ends_in_figure(src: str) -> bool:
    "Does the cell's last statement display the result of a figure function (so the page promises a picture)?"
    try: tree = ast.parse("\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!"))))
    except SyntaxError: return False
    if not tree.body or not isinstance(tree.body[-1], ast.Expr) or not isinstance(tree.body[-1].value, ast.Call): return False
    f = tree.body[-1].value.func
    return (f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None) in FIGURES

def test_every_figure_a_page_shows_is_an_image(site):
    "After execution: no figure is left as text ('<Figure size ...>'), and every cell ending in a figure call has a picture."
    text_only, no_image, n_img = [], [], 0
    for p, nb in _executed(site).items():
        for i, c in enumerate(nb["cells"]):
            if c["cell_type"] != "code": continue
            src = "".join(c["source"])
            data = [o.get("data", {}) for o in c.get("outputs", [])]
            n_img += sum("image/png" in d or "image/svg+xml" in d for d in data)
            text_only += [f"{p} cell {i}" for d in data if re.match(r"<\w*Figure size", "".join(d.get("text/plain", "")))
                          and not ({"image/png", "image/svg+xml"} & set(d))]
            skipped = _flags(src) & (SKIP_FLAGS | {"eval:"})
            if _ends_in_figure(src) and not skipped and not any("image/png" in d for d in data):
                no_image.append(f"{p} cell {i}: {src.strip().splitlines()[-1][:80]}")
    assert n_img >= 10, f"only {n_img} images in the whole site"
    assert not text_only, f"figures saved as text, not images: {text_only}"
    assert not no_image, f"cells that end in a figure but have no image: {no_image}"

def test_static_viewer_survives_docs_processing(site):
    "The viz notebook, run as CI does (IN_TEST) and processed for the docs, still holds the static slider viewers."
    out = site["root"] / "_proc" / "api" / "07_viz.ipynb"
    assert out.exists(), site["proc_out"]
    nb = json.loads(out.read_text())
    views = ["".join(o["data"]["text/html"]) for c in nb["cells"] for o in c.get("outputs", [])
             if "text/html" in o.get("data", {}) and "tof3dgan-view" in "".join(o["data"]["text/html"])]
    assert len(views) >= 2
    for v in views:
        assert '<input type="range"' in v and "<script>" in v and "data:image/png;base64," in v
        assert len(v.encode()) <= 1_500_000
    assert any('width="128" height="90"' in v for v in views)     # the coronal phantom view: 32 x 22.4 mm at 4 px/mm

# ------------------------------------------------------------------------------------------- rendered HTML, in Chromium
BROWSER = next((b for b in (shutil.which("chromium"), "/usr/bin/chromium", "/usr/bin/google-chrome", shutil.which("google-chrome"))
                if b and Path(b).exists()), None)

def _html_pages(site) -> dict:
    "nbconvert's HTML export of every processed page (outputs kept): {notebook: html file}."
    from nbconvert import HTMLExporter
    import nbformat
    proc, out = site["root"] / "_proc", site["root"] / "_html"
    ex = HTMLExporter(template_name="lab")
    pages = {}
    for p in _notebooks(site["root"] / "nbs"):
        if not (proc / p).exists(): continue
        raw = json.loads((proc / p).read_text())
        for c in raw["cells"]: c.get("metadata", {}).pop("execution", None)     # nbdev-test's timings: not valid nbformat
        body, _ = ex.from_notebook_node(nbformat.reads(json.dumps(raw), as_version=4))
        f = out / Path(_page_of(proc, p)); f.parent.mkdir(parents=True, exist_ok=True); f.write_text(body)
        pages[str(p)] = f
    for r in proc.rglob("*"):                                 # the files pages link to (e.g. e04_results/fig6.png), as Quarto copies them
        if r.is_file() and r.suffix.lower() in {".png", ".jpg", ".jpeg", ".gif", ".svg"}:
            dst = out / r.relative_to(proc); dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy(r, dst)
    return pages

@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no headless browser (apt-get install chromium)")
def test_rendered_pages_in_chromium(site):
    "Each page as HTML (nbconvert, no Quarto) in headless Chromium: every <img> loads; every static viewer's slider works."
    sync_api = pytest.importorskip("playwright.sync_api")
    pytest.importorskip("nbconvert")
    assert site["proc_rc"] == 0, site["proc_out"]
    pages = _html_pages(site)
    assert len(pages) == len(_notebooks(site["root"] / "nbs"))
    broken, viewers, imgs = [], 0, 0
    with sync_api.sync_playwright() as pw:
        try: b = pw.chromium.launch(executable_path=BROWSER, headless=True, args=["--no-sandbox", "--disable-gpu",
                                    "--disable-background-networking", "--disable-component-update", "--no-first-run"])
        except Exception as e: pytest.skip(f"Chromium at {BROWSER} cannot start here: {str(e)[:300]}")
        page = b.new_page()
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:")) else r.abort())  # offline
        for name, f in pages.items():
            page.goto(f.as_uri(), wait_until="load")
            bad = page.evaluate("() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                                ".map(i => (i.getAttribute('src') || '').slice(0, 80))")
            imgs += page.evaluate("() => document.images.length")
            broken += [f"{name}: {s}" for s in bad]
            for v in page.locator(".tof3dgan-view").all():
                n = int(v.get_attribute("data-slices"))
                if n < 2: continue
                viewers += 1
                img, rng, idx = v.locator("img"), v.locator("input[type=range]"), v.locator(".tv-idx")
                before, cap = img.get_attribute("src"), idx.text_content()
                rng.fill(str(n - 1))                              # moves the range input, firing 'input' as a drag does
                assert img.get_attribute("src") != before and idx.text_content() != cap, f"{name}: the slider does nothing"
                assert page.evaluate("i => i.complete && i.naturalWidth > 0", img.element_handle()), f"{name}: new slice broken"
        b.close()
    assert not broken, "broken images:\n" + "\n".join(broken)
    assert imgs >= 10 and viewers >= 3, (imgs, viewers)

# ------------------------------------------------------------------------------------ the Quarto site, where it is built
SITE = ROOT / "_docs"

@pytest.mark.skipif(not (SITE / "index.html").exists(), reason="no Quarto-built site in _docs/ (Quarto cannot be installed "
                    "here; the deploy workflow builds the site and runs this test on it)")
def test_built_site_has_every_page_and_no_broken_local_link():
    "After `nbdev-docs`: an HTML page for every sidebar entry, and every local href/src in the site points at a file."
    from html.parser import HTMLParser
    side = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())
    proc = ROOT / "_proc"
    pages = [(_page_of(proc, Path(e)) if (proc / e).exists() else str(nbpath2html(Path(e))))
             for e in _sidebar_entries(side["website"]["sidebar"]["contents"])]
    missing = [p for p in pages if not (SITE / p).exists()]
    assert not missing, f"pages in the sidebar that Quarto did not render: {missing}"

    class Links(HTMLParser):
        def __init__(self): super().__init__(); self.refs = []
        def handle_starttag(self, tag, attrs):
            self.refs += [v for k, v in attrs if k in ("href", "src") and v]
    bad = []
    for f in SITE.rglob("*.html"):
        p = Links(); p.feed(f.read_text(errors="replace"))
        for ref in p.refs:
            if re.match(r"^[a-z][a-z0-9+.-]*:", ref) or ref.startswith(("#", "//")): continue
            target = (f.parent / ref.split("#")[0].split("?")[0]).resolve()
            if ref.split("#")[0] and not target.exists(): bad.append(f"{f.relative_to(SITE)}: {ref}")
    assert not bad, "broken local links in the built site:\n" + "\n".join(sorted(set(bad))[:50])
