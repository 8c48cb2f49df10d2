"The notebooks are the source: they must run, and the package must be exactly what they export."
import os, shutil, subprocess
import pytest
from conftest import ROOT

def _git(*a):
    return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)

def _checkout_files() -> list:
    "The checkout's files as a commit would take them: tracked plus untracked-but-not-ignored (relative paths)."
    r = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted(f for f in set(r.stdout.split("\0")) if f and (ROOT / f).is_file())

@pytest.mark.skipif(shutil.which("nbdev-export") is None, reason="nbdev not installed")
def test_export_and_clean_leave_tree_unchanged(tmp_path):
    "On a copy of the checkout (which is never touched): nbdev-export and nbdev-clean must not change or add a file."
    if _git("rev-parse", "--is-inside-work-tree").returncode != 0: pytest.skip("not a git checkout")
    files, tree = _checkout_files(), tmp_path / "tree"
    for f in files:
        (tree / f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT / f, tree / f)
    for cmd in (["nbdev-export"], ["nbdev-clean"]):
        r = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    changed = [f for f in files if not (tree / f).is_file() or (tree / f).read_bytes() != (ROOT / f).read_bytes()]
    added = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    added = [f for f in added if f not in set(files)]
    if added:   # files the tools wrote that git ignores (caches, build output) do not count
        ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(added),
                                 capture_output=True, text=True).stdout.split()
        added = [f for f in added if f not in set(ignored)]
    assert not changed and not added, (f"nbdev-export/nbdev-clean would change {changed} and add {added}: the package or a "
                                       "notebook differs from what the notebooks export; run them and commit the result")

# Every notebook runs under `nbdev-test` in tests/test_docs.py (test_every_notebook_executes_and_processes_for_the_docs),
# which runs it once with --save as the deploy workflow does; running it a second time here would only cost CI minutes.
