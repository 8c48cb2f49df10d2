"The house rules of the package layout: the README's module table lists every module once, in dependency order."
import ast, re
from conftest import ROOT

PKG = ROOT / "tof3dgan"

def _table() -> list:
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `([\w.]+)` \|", readme.split("| module | what it holds |")[1], re.M)
    return rows

def _modules() -> set:
    out = set()
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).with_suffix("")
        if rel.name.startswith("_") : continue                     # __init__, __main__, _modidx
        out.add(".".join(rel.parts))
    return out

def _imports(mod: str) -> set:
    p = PKG.joinpath(*mod.split(".")).with_suffix(".py")
    pkg = mod.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(p.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:                                         # from .x import y / from ..x import y
                base = pkg[: len(pkg) - node.level + 1] if node.level > 1 else pkg
                name = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("tof3dgan."): name = node.module[len("tof3dgan."):]
            else: continue
            found.add(name)
        elif isinstance(node, ast.Import):
            found |= {a.name[len("tof3dgan."):] for a in node.names if a.name.startswith("tof3dgan.")}
    return found

def test_readme_table_lists_every_module_once():
    rows = _table()
    assert len(rows) == len(set(rows)), f"listed twice: {[r for r in rows if rows.count(r) > 1]}"
    assert set(rows) == _modules(), f"missing from the table: {_modules() - set(rows)}; not modules: {set(rows) - _modules()}"

def test_no_module_imports_one_listed_after_it():
    order = {m: i for i, m in enumerate(_table())}
    bad = [(m, d) for m in order for d in _imports(m) if d in order and order[d] >= order[m]]
    assert not bad, f"imports of modules listed later (or of itself): {bad}"

def test_layout_checker_sees_relative_and_absolute_imports():
    assert {"core", "data.io", "data.preprocess", "phantom", "patches"} <= _imports("data.store")
    assert "metrics.seg" in _imports("viz")
