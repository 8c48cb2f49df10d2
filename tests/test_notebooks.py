"The notebooks are the source: they must run, and the package must be exactly what they export."
import os, shutil, subprocess
import pytest
from conftest import ROOT

def _git(*a):
    return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)

@pytest.mark.skipif(shutil.which("nbdev-export") is None, reason="nbdev not installed")
def test_export_and_clean_leave_tree_unchanged():
    if _git("rev-parse", "--is-inside-work-tree").returncode != 0: pytest.skip("not a git checkout")
    before = _git("status", "--porcelain").stdout
    for cmd in (["nbdev-export"], ["nbdev-clean"]):
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    after = _git("status", "--porcelain").stdout
    assert after == before, f"nbdev-export/nbdev-clean changed files; run them and commit:\n{_git('diff', '--stat').stdout}"

@pytest.mark.skipif(shutil.which("nbdev-test") is None, reason="nbdev not installed")
def test_all_notebooks_run():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["nbdev-test", "--n-workers", "2", "--timing"], cwd=ROOT / "nbs", capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
