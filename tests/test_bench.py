"The GPU benchmark script must be ready to run where a GPU is lent: smoke-test it at tiny size on the CPU."
import json, os, subprocess, sys
from conftest import ROOT

def test_bench_train_quick_smoke(tmp_path):
    out = tmp_path / "train.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_train.py"), "--quick", "--steps", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert not [row for row in res["rows"] if "note" in row], [row["note"] for row in res["rows"] if "note" in row]
    assert {row["config"] for row in res["rows"]} >= {"gp", "sn", "sn_mp", "c_sn_mp", "sn, fast path off", "sn+reuse_fake"}
    ladder = res["reference_vs_ours"]
    assert list(ladder["s_per_step"]) == ["reference", "ours, fast path off", "+ channels_last", "+ fused_adam", "+ fused_upsample",
                                          "defaults", "defaults + reuse_fake (opt-in)", "defaults + bf16 (opt-in)"]
    fp = ladder["fast_path"]                                   # each row measures what its name says
    assert not any(fp["ours, fast path off"].values()) and all(fp["+ fused_upsample"].values())
    assert fp["defaults"] == {"channels_last": True, "fused_adam": True, "fused_upsample": True}   # the CPU's defaults
    assert "vs reference" in r.stdout
    assert [row["loop"] for row in res["ladder_rows"]] == list(ladder["s_per_step"])   # the table the docs page shows
    assert "samples/s" in r.stdout

def test_bench_train_paper_cpu_ladder_smoke(tmp_path):
    out = tmp_path / "ladder.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_train.py"), "--paper-cpu", "--quick", "--steps", "1",
                        "--repeats", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())["ladder"]["w16"]
    assert all(v > 0 for v in res["s_per_step"].values()) and len(res["s_per_step"]) == 8
    rows = json.loads(out.read_text())["ladder_rows"]
    assert len(rows) == 8 and rows[-1]["vs row above"].endswith("x") and {r["width"] for r in rows} == {16}
    assert "vs row above" in r.stdout and "defaults + reuse_fake (opt-in)" in r.stdout
