"""Write README.md from nbs/index.ipynb (nbdev-readme needs Quarto, which these machines cannot install).

Markdown cells are copied as they are, code cells become ```python blocks, outputs are left out.
Run `python tools/make_readme.py` after editing index.ipynb; tests/test_readme.py fails when README.md is stale."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def render(nb_path=ROOT / "nbs" / "index.ipynb") -> str:
    cells = json.loads(Path(nb_path).read_text())["cells"]
    parts = ["<!-- WARNING: generated from nbs/index.ipynb by tools/make_readme.py; edit the notebook, not this file. -->"]
    for c in cells:
        src = "".join(c["source"]).strip()
        if not src or src.startswith("#| hide"): continue
        parts.append(src if c["cell_type"] == "markdown" else f"```python\n{src}\n```")
    return "\n\n".join(parts) + "\n"

if __name__ == "__main__":
    out = ROOT / "README.md"
    out.write_text(render())
    print(f"wrote {out}", file=sys.stderr)
