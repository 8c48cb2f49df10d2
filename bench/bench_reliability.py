"""Reliability report: inject faults into real runs and count what survived.

    python bench/bench_reliability.py     # ~3-5 min on 2 CPU cores; writes bench/results/reliability_cpu.json

Faults: SIGKILL of training processes at random instants (steps and checkpoint writes alike), a damaged newest
checkpoint, a disk that fills up while writing checkpoints / synthetic data / a patch store, and the bad-input corpus
of tests/test_reliability.py through the command line. Counted: runs that resumed to weights identical to an
uninterrupted run, clear one-line errors, partial outputs left behind, and checkpoint files lost (must be 0)."""
import contextlib, errno, io, json, os, random, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests")); sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine, table
from tof3dgan import cli
from tof3dgan.checkpoint import latest_valid, load_checkpoint, verify_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN = ["train", "--preset", "quick", "--epochs", "8", "--n-train", "48", "--quiet"]

def _popen(args):
    return subprocess.Popen([sys.executable, "-m", "tof3dgan", *map(str, args)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

def kill_campaign(tmp, runs=3, kills=4, seed=0):
    subprocess.run([sys.executable, "-m", "tof3dgan", *TRAIN, "--out", tmp / "ref"], env=ENV, check=True)
    ref = load_checkpoint(tmp / "ref" / "checkpoint.pt")
    rng, injected, survived, lost = random.Random(seed), 0, 0, 0
    for r in range(runs):
        out, k = tmp / f"k{r}", 0
        while True:
            valid_before = {p.name for p in (out / "checkpoints").glob("epoch_*.pt") if verify_checkpoint(p)[0]} if out.exists() else set()
            p = _popen(TRAIN + ["--out", out] + (["--resume"] if latest_valid(out / "checkpoints")[0] else []))
            if k < kills:
                time.sleep(rng.uniform(1.2, 3.0))
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL); p.wait(); k += 1; injected += 1
                    after = {q.name for q in (out / "checkpoints").glob("epoch_*.pt") if verify_checkpoint(q)[0]}
                    newest_before = max(valid_before) if valid_before else None
                    lost += int(newest_before is not None and newest_before not in after and not any(a > newest_before for a in after))
                    continue
            p.wait(); break
        b = load_checkpoint(out / "checkpoint.pt")
        survived += int(b["epoch"] == ref["epoch"] and all(torch.equal(ref["G"][q], b["G"][q]) for q in ref["G"])
                        and all(torch.equal(ref["D"][q], b["D"][q]) for q in ref["D"]))
    return {"fault": "SIGKILL during training (random instants)", "injected": injected, "runs": runs,
            "survived": survived, "files_lost": lost}

def damaged_checkpoint(tmp):
    run = tmp / "k0"
    newest = sorted((run / "checkpoints").glob("epoch_*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:2000])
    r = subprocess.run([sys.executable, "-m", "tof3dgan", *TRAIN, "--epochs", "9", "--out", run, "--resume"], env=ENV,
                       capture_output=True, text=True)
    ok = r.returncode == 0 and load_checkpoint(run / "checkpoint.pt")["epoch"] == 9
    return {"fault": "truncated newest checkpoint, then --resume", "injected": 1, "runs": 1, "survived": int(ok), "files_lost": 0}

@contextlib.contextmanager
def _full_disk(module, attr, after):
    "Make `module.attr` (a writer) fail with ENOSPC after `after` calls."
    real, n = getattr(module, attr), {"k": 0}
    def flaky(*a, **k):
        n["k"] += 1
        if n["k"] > after: raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)
    setattr(module, attr, flaky)
    try: yield
    finally: setattr(module, attr, real)

def disk_full(tmp):
    import tof3dgan.checkpoint as ck, tof3dgan.generate as gen, tof3dgan.data.store as data
    from tof3dgan.core import TofError, get_preset
    from tof3dgan.train import Trainer
    from tof3dgan.data.store import load_pairs
    rows = []
    cfg = get_preset("quick", epochs=4)
    t = Trainer(cfg, load_pairs("phantom", cfg, progress=False), tmp / "df", progress=False); t.fit(2)
    before = sorted(p.name for p in (tmp / "df" / "checkpoints").glob("epoch_*.pt"))
    clear = 0
    with _full_disk(ck.torch, "save", 0):
        try: t.fit(3)
        except TofError as e: clear = int("disk is full" in str(e))
    after_ok = all(verify_checkpoint(tmp / "df" / "checkpoints" / n)[0] for n in before)
    partial = len([p for p in (tmp / "df").rglob("*") if p.name.endswith(".tmp")])
    rows.append({"fault": "disk full while writing a checkpoint", "injected": 1, "runs": 1, "survived": clear * int(after_ok),
                 "files_lost": len(before) - sum(verify_checkpoint(tmp / "df" / "checkpoints" / n)[0] for n in before), "partial_outputs": partial})
    with _full_disk(gen.nib, "save", 5):
        try: gen.generate(tmp / "df" / "checkpoint.pt", 8, tmp / "syn", progress=False); clear = 0
        except TofError as e: clear = int("disk is full" in str(e))
    partial = len([p for p in tmp.iterdir() if p.name.startswith("syn")])
    rows.append({"fault": "disk full while writing synthetic NIfTI pairs", "injected": 1, "runs": 1, "survived": clear * int(partial == 0),
                 "files_lost": 0, "partial_outputs": partial})
    src = data.example_dataset(tmp / "raw", n_phantoms=2, shape=(48, 56, 24))
    with _full_disk(data.np.lib.format, "open_memmap", 1):
        try: data.prepare(src, tmp / "store", data.PrepareConfig(spec=data.PatchSpec(patch=(16, 16, 8), n_random=4, n_seg=4), spacing=None,
                                                                n4=False, splits=(0.5, 0.5, 0.0)), progress=False); clear = 0
        except TofError as e: clear = int("disk is full" in str(e))
    partial = len([p for p in tmp.iterdir() if p.name.startswith("store")])
    rows.append({"fault": "disk full while writing a patch store", "injected": 1, "runs": 1, "survived": clear * int(partial == 0),
                 "files_lost": 0, "partial_outputs": partial})
    return rows

def corpus(tmp):
    from test_reliability import _corpus_cases, CORPUS
    clear = partial = 0
    for name in CORPUS:
        d = tmp / "corpus" / name.replace("/", "_"); d.mkdir(parents=True)
        make, expected = _corpus_cases(d)[name]
        argv = [str(a) for a in make()] + ["--quiet"]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try: code = cli.main(argv)
            except BaseException as e: code = f"uncaught {type(e).__name__}"
        lines = [l for l in err.getvalue().strip().splitlines() if l.strip()]
        clear += int(code == 2 and len(lines) == 1 and lines[0].startswith("tof3dgan: error: ") and expected in lines[0])
        partial += int((d / "out").exists() or any(".partial-" in p.name for p in d.rglob("*")))
    return {"fault": "bad-input corpus through prepare/train/generate/evaluate", "injected": len(CORPUS), "runs": len(CORPUS),
            "survived": clear, "files_lost": 0, "partial_outputs": partial}

def main():
    tmp = Path(tempfile.mkdtemp())
    t0 = time.time()
    rows = [kill_campaign(tmp), damaged_checkpoint(tmp), *disk_full(tmp), corpus(tmp)]
    for r in rows: r.setdefault("partial_outputs", 0)
    m = machine()
    print(f"machine: {m}\n")
    print(table(rows, ["fault", "injected", "runs", "survived", "files_lost", "partial_outputs"]))
    tot = {k: sum(r[k] for r in rows) for k in ("injected", "runs", "survived", "files_lost", "partial_outputs")}
    print(f"\ntotal: {tot}  ({time.time() - t0:.0f} s)")
    out = Path(__file__).parent / "results" / "reliability_cpu.json"
    out.write_text(json.dumps({"machine": m, "rows": rows, "total": tot, "seconds": round(time.time() - t0)}, indent=2) + "\n")
    print(f"wrote {out}")
    shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    main()
