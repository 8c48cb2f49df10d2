"""Benchmark of the live slice viewer on this machine (a plain script, not a test).

    OMP_NUM_THREADS=1 python bench/bench_viewer.py [--steps 30] [--source phantom|noise|both] [--quick] [--out PATH]

The widget of `tof3dgan.viz.VolumeView` on a whole 512x512x100 volume (0.5x0.5x0.7 mm): a phantom head
(`make_phantom`, TOF-like, with its vessel label and a perturbed copy as the prediction) and/or uniform noise in
[0, 1] (the worst case for PNG compression). For each display setting (slice + label, slice + error map, MIP + label)
and each slider (z moves the 512x512 axial plane, y the 512x100 coronal, x the 512x100 sagittal), the time of one
slider step: from setting the slider's value to the three planes' PNGs being ready in the kernel (recomputing the
moved plane, redrawing the crosshairs, encoding), as wall time and as this process's CPU time (which a busy machine
inflates less). No browser: decoding and painting in the frontend are not included.
Also the time to build the widget and the static HTML. Prints a table and writes bench/results/viewer_cpu.json
(or --out) with the machine and its load average named. The goal of issue #15 is under 50 ms per step."""
import argparse, os, platform, statistics, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine, table
from scipy import ndimage as ndi
from tof3dgan.core import write_json
from tof3dgan.viz import VolumeView

ROOT = Path(__file__).resolve().parents[1]
SHAPE, SPACING = (512, 512, 100), (0.5, 0.5, 0.7)

def machine_info() -> dict:
    import ipywidgets
    return {**machine(), "usable_cores": len(os.sched_getaffinity(0)), "numpy": np.__version__,
            "ipywidgets": ipywidgets.__version__, "python": platform.python_version(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_average_before": [round(x, 2) for x in os.getloadavg()]}

def volumes(source: str, shape) -> dict:
    "name -> (image, label, prediction)."
    out = {}
    if source in ("phantom", "both"):
        from tof3dgan.phantom import make_phantom
        ph = make_phantom(shape, SPACING, seed=0)
        lab = ph.label > 0.5
        pred = ndi.binary_dilation(lab) & (np.random.default_rng(1).random(shape) > 0.3)
        out["phantom"] = (ph.image.astype(np.float32), lab, pred)
    if source in ("noise", "both"):
        rng = np.random.default_rng(0)
        img = rng.random(shape, dtype=np.float32)
        out["noise"] = (img, img > 0.97, img > 0.96)
    return out

def time_steps(w, key: str, steps: int) -> tuple[list, list]:
    """(wall seconds, CPU seconds of this process) per slider step, stepping by 7 slices (wrapping) so that every step
    shows a new slice. On a loaded machine the wall time includes waiting for a core; the CPU time does not."""
    s, ts, cs = w.controls[key], [], []
    for _ in range(steps):
        v = (s.value + 7) % (s.max + 1)
        t, c = time.perf_counter(), time.process_time(); s.value = v
        ts.append(time.perf_counter() - t); cs.append(time.process_time() - c)
    return ts, cs

def run(source: str, steps: int, shape) -> tuple[list, list]:
    rows, builds = [], []
    for name, (img, lab, pred) in volumes(source, shape).items():
        for setting, kw, ctl in (("slice + label", {}, {}), ("slice + errors", {"pred": pred}, {}),
                                 ("MIP + label", {}, {"view": "mip"})):
            t = time.perf_counter(); v = VolumeView(img, lab, SPACING, **kw); w = v.widget(); t_build = time.perf_counter() - t
            t = time.perf_counter()
            for k, val in ctl.items(): w.controls[k].value = val
            t_switch = time.perf_counter() - t
            builds.append({"volume": name, "setting": setting, "widget_build_s": round(t_build, 3),
                           "switch_s": round(t_switch, 3) if ctl else ""})
            for key, plane in (("z", "axial"), ("y", "coronal"), ("x", "sagittal")):
                ts, cs = time_steps(w, key, steps)
                png = sum(len(bytes(im.value)) for im in w.images.values())
                ms = sorted(1000 * x for x in ts)
                rows.append({"volume": name, "setting": setting, "slider": f"{key} ({plane})", "steps": steps,
                             "median_ms": round(statistics.median(ms), 1), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
                             "max_ms": round(ms[-1], 1), "cpu_median_ms": round(1000 * statistics.median(cs), 1),
                             "png_kb_3_planes": round(png / 1024)})
        t = time.perf_counter(); html = VolumeView(img, lab, SPACING).to_html(); t_html = time.perf_counter() - t
        builds.append({"volume": name, "setting": "static HTML (40 axial slices)", "widget_build_s": "", "switch_s": "",
                       "static_html_s": round(t_html, 3), "static_html_kb": round(len(html.encode()) / 1024)})
    return rows, builds

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--source", choices=("phantom", "noise", "both"), default="both")
    ap.add_argument("--quick", action="store_true", help="a 96x96x24 volume and 3 steps: a smoke test, not a measurement")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "viewer_cpu.json")
    a = ap.parse_args(argv)
    shape, steps = ((96, 96, 24), min(a.steps, 3)) if a.quick else (SHAPE, a.steps)
    info = machine_info()
    rows, builds = run(a.source, steps, shape)
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    worst, worst_cpu = max(r["median_ms"] for r in rows), max(r["cpu_median_ms"] for r in rows)
    print(f"VolumeView widget, one slider step, volume {'x'.join(map(str, shape))} at {SPACING} mm; {info['cpu']}, "
          f"{info['usable_cores']} cores, load average {info['load_average_before']} -> {info['load_average_after']}")
    print(table(rows, ["volume", "setting", "slider", "median_ms", "p90_ms", "max_ms", "cpu_median_ms", "png_kb_3_planes"]))
    print(table(builds, ["volume", "setting", "widget_build_s", "switch_s", "static_html_s", "static_html_kb"]))
    print(f"slowest median step {worst:.1f} ms wall, {worst_cpu:.1f} ms CPU (goal < 50 ms)")
    write_json({"machine": info, "shape": list(shape), "spacing": list(SPACING), "goal_ms": 50, "quick": a.quick,
                "slowest_median_ms": worst, "slowest_cpu_median_ms": worst_cpu, "steps": rows, "builds": builds,
                "note": "time in the kernel from slider value to the three PNGs ready; browser decode/paint not included"}, a.out)
    print(f"wrote {a.out}")

if __name__ == "__main__":
    main()
