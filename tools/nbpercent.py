"""Edit notebooks as text: convert between .ipynb and percent-format .py (`# %%` code, `# %% [markdown]` prose).

    python tools/nbpercent.py to-py nbs/api/08_train.ipynb /tmp/08_train.py   # notebook -> editable text
    python tools/nbpercent.py to-nb /tmp/08_train.py nbs/api/08_train.ipynb   # text -> notebook (outputs dropped)

Then run `nbdev-clean && nbdev-export`. Cell ids are derived from position and content, so unchanged cells keep them."""
import hashlib, json, re, sys
from pathlib import Path

def to_nb(src, dst):
    cells, cur, kind = [], [], None
    def flush():
        if kind is None: return
        lines = list(cur)
        while lines and not lines[-1].strip(): lines.pop()
        while lines and not lines[0].strip(): lines.pop(0)
        if kind == "markdown": lines = [re.sub(r"^# ?", "", l) for l in lines]
        body = "\n".join(lines)
        c = {"cell_type": kind, "id": hashlib.sha1(f"{len(cells)}:{body}".encode()).hexdigest()[:8], "metadata": {},
             "source": [l + "\n" for l in body.split("\n")[:-1]] + ([body.split("\n")[-1]] if body else [])}
        if kind == "code": c.update(execution_count=None, outputs=[])
        cells.append(c)
    for line in Path(src).read_text().split("\n"):
        if line.startswith("# %%"):
            flush(); cur, kind = [], ("markdown" if "[markdown]" in line else "code")
        else: cur.append(line)
    flush()
    nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    Path(dst).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")

def to_py(src, dst):
    out = []
    for c in json.loads(Path(src).read_text())["cells"]:
        body = "".join(c["source"])
        if c["cell_type"] == "markdown":
            out.append("# %% [markdown]\n" + "\n".join(("# " + l) if l else "#" for l in body.split("\n")))
        else: out.append("# %%\n" + body)
    Path(dst).write_text("\n\n".join(out) + "\n")

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("to-nb", "to-py"): sys.exit(__doc__)
    (to_nb if sys.argv[1] == "to-nb" else to_py)(sys.argv[2], sys.argv[3])
