"""Two training processes on one machine: wall time with each process's thread count left to tof3dgan's default (the
available cores shared among the tof3dgan processes running), with `--threads` splitting the cores, with `--threads`
giving each process every core (oversubscribed: what PyTorch's own default does), and one process alone.

    python bench/bench_threads.py [--preset demo] [--epochs 2] [--n-train 96]

Each case runs `tof3dgan train` in subprocesses with OMP_NUM_THREADS unset (so the CLI's own choice applies unless
`--threads` is given); prints a table and writes bench/results/threads_cpu.json. Never a test."""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine, table

def run(n_proc: int, threads: int | None, preset: str, epochs: int, n_train: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    tmp = Path(tempfile.mkdtemp())
    cmd = lambda i: [sys.executable, "-c", "import sys; from tof3dgan.cli import main; sys.exit(main())", "train", "--preset", preset, "--epochs", str(epochs), "--n-train", str(n_train), "--quiet",
                     "--out", str(tmp / f"run{i}")] + (["--threads", str(threads)] if threads else [])
    t0 = time.perf_counter()
    ps = [subprocess.Popen(cmd(i), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n_proc)]
    outs = [p.communicate() for p in ps]
    wall = time.perf_counter() - t0
    if any(p.returncode for p in ps): raise SystemExit(f"a run failed: {[o[1][-500:] for o in outs]}")
    rj = json.loads((tmp / "run0" / "run.json").read_text())["threads"]
    return {"processes": n_proc, "threads at start": rj["threads"], "chosen by": rj["source"], "wall s": round(wall, 1)}

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo"); ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=96, help="phantom training pairs per run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "threads_cpu.json"))
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    rows = [run(1, None, a.preset, a.epochs, a.n_train), run(2, None, a.preset, a.epochs, a.n_train),
            run(2, max(1, cores // 2), a.preset, a.epochs, a.n_train),
            run(2, cores, a.preset, a.epochs, a.n_train)]              # each with every core: oversubscribed (the old default)
    for r in rows: r["per run s"] = round(r["wall s"] / r["processes"], 1)
    print(f"machine: {machine()}, {cores} usable cores; `tof3dgan train --preset {a.preset} --epochs {a.epochs} --n-train {a.n_train}` per process\n")
    print(table(rows, ["processes", "threads at start", "chosen by", "wall s", "per run s"]))
    Path(a.out).write_text(json.dumps({"machine": machine(), "usable_cores": cores, "preset": a.preset, "epochs": a.epochs, "n_train": a.n_train,
                                       "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {a.out}")

if __name__ == "__main__":
    main()
