"""JupyterLab as a user runs it: a real `jupyter lab` server, the tour notebook and an experiment notebook opened in
headless Chromium (Playwright, Debian's chromium; no browser download), every cell run, the live viewer moved.

Needs the [notebooks] extra (jupyterlab, which brings ipykernel), the Python package playwright and a system Chromium
(`apt-get install chromium`; GitHub's runners have Google Chrome). Skips, saying which, only when one is missing."""
import json, os, re, shutil, socket, subprocess, sys, time, secrets, urllib.request
from pathlib import Path
import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

BROWSER = next((b for b in (shutil.which("chromium"), "/usr/bin/chromium", "/usr/bin/google-chrome", shutil.which("google-chrome"))
                if b and Path(b).exists()), None)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
NOTEBOOKS = {"index.ipynb": ROOT / "nbs" / "index.ipynb",
             "e01_data_preparation.ipynb": ROOT / "nbs" / "experiments" / "e01_data_preparation.ipynb"}

def _missing() -> str | None:
    if BROWSER is None: return "no Chromium or Chrome on this machine (apt-get install chromium)"
    for mod, what in (("playwright.sync_api", "playwright (pip install playwright)"), ("jupyterlab", "jupyterlab ([notebooks] extra)"),
                      ("ipykernel", "ipykernel ([notebooks] extra)"), ("ipywidgets", "ipywidgets")):
        try: __import__(mod)
        except ImportError: return f"{what} is not installed"
    return None

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "A `jupyter lab` server on a free loopback port with a token, serving a temporary folder with copies of the notebooks."
    if (why := _missing()): pytest.skip(why)
    root = tmp_path_factory.mktemp("lab")
    for name, src in NOTEBOOKS.items(): shutil.copy(src, root / name)
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}          # as a user's shell: no Agg forced
    env.update(IN_TEST="1", OMP_NUM_THREADS="1", JUPYTER_CONFIG_DIR=str(root / ".cfg"), JUPYTER_RUNTIME_DIR=str(root / ".rt"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / ".ws"), JUPYTERLAB_SETTINGS_DIR=str(root / ".settings"))
    # every cell in the page (JupyterLab 4 otherwise renders only those near the viewport), no news pop-up
    for ext, body in (("notebook-extension/tracker", {"windowingMode": "none", "autoStartDefaultKernel": True}), ("apputils-extension/notification", {"fetchNews": "false"})):
        f = root / ".settings" / "@jupyterlab" / f"{ext}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True); f.write_text(json.dumps(body))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--ServerApp.allow_root=True"]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        while time.time() - t0 < 60:
            if proc.poll() is not None: pytest.fail(f"jupyter lab exited:\n{(root / 'server.log').read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1): break
            except OSError: time.sleep(0.5)
        else: pytest.fail(f"jupyter lab did not listen within 60 s:\n{(root / 'server.log').read_text()[-3000:]}")
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "root": root}
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()

@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        try: b = p.chromium.launch(executable_path=BROWSER, args=ARGS, headless=True)
        except Exception as e: pytest.skip(f"Chromium at {BROWSER} cannot start here: {str(e)[:300]}")
        yield b
        b.close()

def _run_all(page, lab, name: str, timeout_s: float):
    "Open notebook `name` in JupyterLab, run all cells, wait until every code cell has run, save it; returns the saved JSON."
    # Start the notebook's kernel through the REST API and wait until it is idle before the page opens: a page that
    # connects while the server is still wiring up a new kernel gets a 500 on its first websocket, and on a busy machine
    # the widget models of the cells then go missing ("Error displaying widget: model not found").
    api = lambda path, body=None: json.load(urllib.request.urlopen(urllib.request.Request(
        f"{lab['url']}/api/{path}?token={lab['token']}", data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST"), timeout=30))
    kid = api("sessions", {"path": name, "name": name, "type": "notebook", "kernel": {"name": "python3"}})["kernel"]["id"]
    from jupyter_client import BlockingKernelClient
    cf, t0 = lab["root"] / ".rt" / f"kernel-{kid}.json", time.time()
    while not cf.exists():
        if time.time() - t0 > 60: raise AssertionError(f"{name}: no connection file for its kernel within 60 s")
        time.sleep(0.2)
    kc = BlockingKernelClient(connection_file=str(cf)); kc.load_connection_file(); kc.start_channels()
    try: kc.wait_for_ready(timeout=90)                         # the kernel answers kernel_info: it is up
    finally: kc.stop_channels()
    # a workspace of its own, reset: only this notebook open (not the tabs an earlier test left)
    page.goto(f"{lab['url']}/lab/workspaces/{name.split('.')[0]}/tree/{name}?reset&token={lab['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    prompts = f"() => [...document.querySelectorAll('{PANEL} .jp-CodeCell .jp-InputPrompt')].map(e => e.textContent)"
    for attempt in range(3):                                   # a busy machine can lose the first kernel connection
        _accept_dialogs(page)
        page.wait_for_function(f"() => {{ const s = document.querySelector('{PANEL} .jp-Notebook-ExecutionIndicator');"
                               " return s && s.getAttribute('data-status') === 'idle'; }", timeout=90_000)  # kernel up
        _accept_dialogs(page)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
        t0 = time.time()
        while time.time() - t0 < 30 and all("[ ]" in t for t in page.evaluate(prompts)):
            _accept_dialogs(page); page.wait_for_timeout(500)
        if not all("[ ]" in t for t in page.evaluate(prompts)): break
    else: raise AssertionError(f"{name}: Run All Cells started nothing, three times")
    n_code = sum(c["cell_type"] == "code" for c in json.loads(NOTEBOOKS[name].read_text())["cells"])
    idle = (f"() => {{ const s = document.querySelector('{PANEL} .jp-Notebook-ExecutionIndicator');"
            " return s && s.getAttribute('data-status') === 'idle'; }")
    t0 = last_change = time.time(); last, reruns = None, 0
    while True:                                                            # every code cell shows [n]: it has run
        p = page.evaluate(prompts)
        if len(p) == n_code and all(re.search(r"\[\d+\]", t) for t in p): break
        if p != last: last, last_change = p, time.time()
        # JupyterLab on a busy machine can replace the kernel it first started while the queue is sent (the server log
        # then shows a websocket error for the first kernel): the cells after the first never run. A kernel that sits
        # idle with cells still unrun for 20 s lost them: run all cells again (at most twice).
        elif time.time() - last_change > 20 and reruns < 2 and page.evaluate(idle):
            _accept_dialogs(page)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
            reruns, last_change = reruns + 1, time.time()
        if time.time() - t0 > timeout_s:
            page.screenshot(path=str(lab["root"] / f"{name}.timeout.png"))
            raise AssertionError(f"{name}: not every cell ran within {timeout_s} s; prompts {p}; "
                                 f"screenshot in {lab['root']}; server log:\n{(lab['root'] / 'server.log').read_text()[-2000:]}")
        page.wait_for_timeout(500)
    page.keyboard.press("Control+s")
    path = lab["root"] / name
    t0 = time.time()
    while time.time() - t0 < 20:                                           # the save has reached the disk
        nb = json.loads(path.read_text())
        if all(c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"): return nb
        time.sleep(0.5)
    raise AssertionError(f"{name}: JupyterLab did not save the run notebook")

PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"                      # the notebook on screen

def _accept_dialogs(page):
    "Dismiss a JupyterLab dialog (e.g. 'Select Kernel': take the notebook's own kernel) if one is open."
    for _ in range(3):
        if not page.locator(".jp-Dialog").count(): return
        page.locator(".jp-Dialog .jp-mod-accept").first.click(); page.wait_for_timeout(300)

def _errors(nb) -> list:
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(nb["cells"]) for o in c.get("outputs", [])
            if o.get("output_type") == "error"]

def _shot(loc) -> bytes:
    return loc.screenshot(animations="disabled")

def _changes(page, loc, before: bytes, what: str, timeout_s: float = 15) -> bytes:
    "Wait until the element's screenshot differs from `before` (the kernel has sent the new PNG); returns the new one."
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        now = _shot(loc)
        if now != before: return now
        page.wait_for_timeout(200)
    raise AssertionError(f"{what}: the picture did not change")

def _set_readout(page, widget, value):
    "Type `value` into an ipywidgets slider's readout, as a user does, and press Enter."
    r = widget.locator(".widget-readout")
    r.click(); page.keyboard.press("Control+a"); page.keyboard.type(str(value)); page.keyboard.press("Enter")

def test_jupyterlab_runs_the_tour_and_the_viewer_responds(lab, browser):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    nb = _run_all(page, lab, "index.ipynb", timeout_s=150)
    assert not _errors(nb), _errors(nb)
    outs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outs) >= 2                  # both pair grids are pictures
    assert not [o for o in outs if "Figure size" in "".join(o.get("data", {}).get("text/plain", "")) and "image/png" not in o["data"]]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outs)   # the live viewer
    # the widget is on screen, three planes drawn
    view = page.locator(f"{PANEL} .tof3dgan-w-axial").first
    try: view.scroll_into_view_if_needed()
    except Exception:
        page.screenshot(path=str(lab["root"] / "no_viewer.png"), full_page=True)
        texts = page.evaluate(f"() => [...document.querySelectorAll('{PANEL} .jp-OutputArea-output')].map(e => e.innerText.slice(0, 300))")
        raise AssertionError(f"the live viewer is not on the page (screenshot {lab['root'] / 'no_viewer.png'}); outputs: {texts}")
    page.wait_for_function(f"() => [...document.querySelectorAll('{PANEL} img.tof3dgan-plane')].length === 3 &&"
                           f" [...document.querySelectorAll('{PANEL} img.tof3dgan-plane')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=30_000)
    box = view.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100
    coronal = page.locator(f"{PANEL} .tof3dgan-w-coronal").first
    a0, c0 = _shot(view), _shot(coronal)
    # the z slider moves the axial plane (and the cursor line in the coronal one)
    _set_readout(page, page.locator(f"{PANEL} .tof3dgan-w-z").first, 10)
    a1 = _changes(page, view, a0, "z slider -> axial plane")
    _changes(page, coronal, c0, "z slider -> cursor in the coronal plane")
    # the keyboard moves the slider too (focus the handle, arrow right)
    page.locator(f"{PANEL} .tof3dgan-w-z .noUi-handle").first.focus(); page.keyboard.press("ArrowRight")
    a2 = _changes(page, view, a1, "arrow key on the z slider")
    # window level and opacity act on the picture
    _set_readout(page, page.locator(f"{PANEL} .tof3dgan-w-level").first, 0.9)
    a3 = _changes(page, view, a2, "window level")
    _set_readout(page, page.locator(f"{PANEL} .tof3dgan-w-opacity").first, 0)
    a4 = _changes(page, view, a3, "label opacity")
    page.locator(f"{PANEL} .tof3dgan-w-view button", has_text="MIP").first.click()
    _changes(page, view, a4, "MIP view")
    page.close()

def test_jupyterlab_runs_an_experiment_with_its_3d_view(lab, browser):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    nb = _run_all(page, lab, "e01_data_preparation.ipynb", timeout_s=200)
    assert not _errors(nb), _errors(nb)
    fig4 = [c for c in nb["cells"] if c["cell_type"] == "code" and "fig4_grid(" in "".join(c["source"])]
    assert fig4 and all(any("image/png" in o.get("data", {}) for o in c["outputs"]) for c in fig4), "the 3D vessel view"
    outs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outs) >= 3
    # every picture on the page loaded (the 3D view among them), and the viewer widget drew its planes
    page.wait_for_function(f"() => [...document.querySelectorAll('{PANEL} .jp-RenderedImage img')].length >= 3 &&"
                           f" [...document.querySelectorAll('{PANEL} .jp-RenderedImage img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=30_000)
    view = page.locator(f"{PANEL} .tof3dgan-w-axial").first
    view.scroll_into_view_if_needed()
    a0 = _shot(view)
    _set_readout(page, page.locator(f"{PANEL} .tof3dgan-w-z").first, 3)
    _changes(page, view, a0, "z slider in the experiment's viewer")
    page.close()
