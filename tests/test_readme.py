import re, runpy
from conftest import ROOT

def test_readme_matches_index_notebook():
    render = runpy.run_path(str(ROOT / "tools" / "make_readme.py"))["render"]
    assert (ROOT / "README.md").read_text() == render(), "README.md is stale: run `python tools/make_readme.py`"

def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up")[1].split("\n## ")[0]
    cmds = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)
    assert cmds[0].startswith("pip install") and "tof3dgan demo" in cmds[0] and "torch==2.13.0" in cmds[0]
    assert cmds[1].startswith("pip install") and "pytest" in cmds[1]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == cmds[1]
