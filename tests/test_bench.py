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
    assert {row["config"] for row in res["rows"]} >= {"gp", "sn", "sn_mp", "c_sn_mp", "sn+channels_last", "sn+reuse_fake"}
    assert set(res["reference_vs_ours"]) == {"reference", "ours", "ours_reuse_fake", "ours_channels_last", "ours_channels_last_reuse_fake"}
    assert "samples/s" in r.stdout and "speed-up vs reference" in r.stdout
