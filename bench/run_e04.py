"""Experiment e04, the downstream proof: U-Nets trained on real, synthetic and real + synthetic pairs, scored on test volumes.

    OMP_NUM_THREADS=1 python bench/run_e04.py --scale cpu --out /tmp/e04 --results nbs/experiments/e04_results
    OMP_NUM_THREADS=1 python bench/run_e04.py --scale quick --out /tmp/e04q           # the notebook's size (~1 min)
    python bench/run_e04.py --scale paper --out RUN --store STORE --test TESTDIR       # GPU: the paper's networks

Stages (each is skipped when its output exists, so a killed run continues where it stopped):
  data      phantom heads -> `prepare` store (train/val patients); test volumes: TOF-like images rendered around the
            real vessel masks of ../shared/data/real/vessel_masks (cropped), or phantom heads when those are absent
  gans      the paper's four variants (GP, SN, SN-MP, c-SN-MP) at the scale's width and patch, on the store's GAN set
  generate  synthetic pairs from each GAN, and from the shipped generator (tof3dgan.pretrained) when its patch fits
  unets     U-Nets on real, on each synthetic set, and on real + synthetic sets (the paper's appendix A)
  predict   sliding-window predictions of every U-Net (window contrast floor from the training patients), and of the
            calibrated intensity threshold (the floor)
  score     DSC, bAVD per test volume, all vessels and intracranial
  report    Table 3 beside the paper's, synthetic/real ratios, Fig. 6 box plots, Fig. 7 error maps -> --results

Scales: `quick` (tests and notebooks), `cpu` (the measured run on a 2-core CPU, about an hour of CPU time), `paper`
(presets unchanged; bring a store made by `tof3dgan prepare` with --patch 128,128,64 and a test folder; a GPU).
"""
from __future__ import annotations
import argparse, json, math, os, sys, time
from dataclasses import dataclass, field, replace
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

VARIANTS = {"GP": "paper_gp", "SN": "paper_sn", "SN-MP": "paper_sn_mp", "c-SN-MP": "paper_c_sn_mp"}
STAGES = ("data", "gans", "generate", "unets", "predict", "score", "report")
TEST_MASKS = ("Normal001-MRA-STAPLE", "IXI022-Guys-0701-MRA-STAPLE", "IXI020-Guys-0700-MRA-SPOCKMIP",
              "IXI027-Guys-071-nnUNet", "ds003949-sub-000")      # one mask per subject (several raters exist for some)

@dataclass
class Scale:
    "Sizes of one e04 run."
    name: str
    heads: int = 10                      # phantom heads ("patients") for training and validation
    head: tuple = (312, 384, 127)        # phantom head size (voxels at 0.5 x 0.5 x 0.7 mm)
    splits: tuple = (0.8, 0.2, 0.0)      # train / val / test fractions of the heads (test: the rendered masks)
    patch: tuple = (32, 32, 16)
    n_gan: int = 50                      # vessel-centred GAN patches per training head
    n_seg: int = 250                     # vessel-centred U-Net patches per training / validation head (paper: 250)
    gan_width: int = 128                 # GAN width (c-SN-MP: twice this); 128 is the shipped generator's
    gan_steps: int = 1000                # generator steps per GAN variant
    n_syn: int = 0                       # synthetic pairs per GAN; 0 = as many as real U-Net patches
    unet: dict = field(default_factory=dict)   # overrides of the U-Net preset
    unet_preset: str = "cpu"
    test_crop: tuple | None = (128, 128, 64)   # test volumes cropped around the vessels' centroid (None: whole)
    n_test: int = 5                      # test volumes
    shipped: bool = True                 # add the shipped generator (tof3dgan.pretrained) when its patch fits
    mixed: tuple | None = None           # synthetic sets that also get a real + synthetic U-Net (None: all)

SCALES = {
    "quick": Scale("quick", heads=4, head=(64, 72, 32), splits=(0.75, 0.25, 0.0), n_gan=8, n_seg=8, gan_width=8, gan_steps=3,
                   unet_preset="quick", test_crop=(48, 48, 24), n_test=2),
    "cpu": Scale("cpu", mixed=("c-SN-MP", "shipped")),
    "paper": Scale("paper", patch=(128, 128, 64), n_gan=32, n_seg=250, gan_width=0, gan_steps=0, n_syn=2350, unet_preset="paper",
                   test_crop=None, n_test=0, shipped=False),
}

def log(msg: str):
    print(f"[e04 {time.strftime('%H:%M:%S')}] {msg}", flush=True)

def _dir(name: str) -> str: return name.replace(" ", "")

# ---------------------------------------------------------------------------------------------- data
def _write_case(root: Path, part: str, name: str, image, label, brain, affine):
    import nibabel as nib
    for kind, arr, dt in (("images", image, np.float32), ("labels", label, np.uint8), ("brainmasks", brain, np.uint8)):
        d = root / f"{kind}{part}"; d.mkdir(parents=True, exist_ok=True)
        f = d / (f"{name}_0000.nii.gz" if kind == "images" else f"{name}.nii.gz")
        img = nib.Nifti1Image(np.asarray(arr, dt), affine); img.set_qform(affine, code=1); img.set_sform(affine, code=1)
        nib.save(img, f)

def _crop(arrays, centre, size):
    "The `size` box of each array around `centre`, kept inside the volume."
    from tof3dgan.patches import crop
    shape = arrays[0].shape
    o = [max(0, min(int(c) - s // 2, n - s)) if n >= s else 0 for c, s, n in zip(centre, size, shape)]
    size = [min(s, n) for s, n in zip(size, shape)]
    return [crop(a, o, size) for a in arrays], o

def make_data(out: Path, sc: Scale, masks_dir: Path | None, seed: int = 0) -> dict:
    "Training/validation heads -> patch store; test volumes (real-mask renders, else phantom heads) in nnU-Net Ts layout."
    from tof3dgan.core import write_json
    from tof3dgan.phantom import make_phantom, render_around_mask
    from tof3dgan.data.store import PatchSpec, PrepareConfig, prepare
    from tof3dgan.data.io import read_volume, spacing_of
    from tof3dgan.data.preprocess import resample
    info = {}
    if not (out / "store" / "index.json").is_file():
        raw = out / "raw"
        for i in range(sc.heads):
            ph = make_phantom(sc.head, seed=seed + i)
            _write_case(raw, "Tr", f"head_{i:03d}", ph.image, ph.label, ph.brain, ph.affine)
        cfg = PrepareConfig(spec=PatchSpec(patch=sc.patch, systematic=False, n_random=sc.n_gan, n_seg=sc.n_seg, seed=seed),
                            n4=False, denoise="none", spacing=None, splits=sc.splits)
        prepare(raw, out / "store", cfg, progress=False)
    info["splits"] = json.loads((out / "store" / "index.json").read_text())["splits"]
    test = out / "test"
    if (test / "imagesTs").is_dir() and not (test / "test.json").is_file():       # a test folder the user brought
        info["test"] = [{"case": p.name[: -len("_0000.nii.gz")], "source": "given"} for p in sorted((test / "imagesTs").glob("*_0000.nii.gz"))]
        return info
    if not (test / "test.json").is_file():
        cases = []
        files = [masks_dir / f"{m}.nii.gz" for m in TEST_MASKS] if masks_dir is not None else []
        files = [f for f in files if f.is_file()][: sc.n_test]
        for k, f in enumerate(files):
            arr, aff = read_volume(f)
            lab = resample((arr > 0.5).astype(np.float32), spacing_of(aff), (0.5, 0.5, 0.7), 1) > 0.5
            if sc.test_crop: (lab,), _ = _crop([lab], np.argwhere(lab).mean(0), sc.test_crop)
            ph = render_around_mask(lab, (0.5, 0.5, 0.7), seed=seed + 500 + k)
            name = f.name[: -len(".nii.gz")].replace("-", "_")
            _write_case(test, "Ts", name, ph.image, ph.label, ph.brain, ph.affine)
            cases.append({"case": name, "source": f"rendered around {f.name}", "shape": list(lab.shape)})
        for k in range(0 if files else max(sc.n_test, 1)):                  # no real masks: phantom heads instead
            ph = make_phantom(sc.head, seed=seed + 900 + k)
            arrs = [ph.image, ph.label, ph.brain]
            if sc.test_crop: arrs, _ = _crop(arrs, np.argwhere(ph.label).mean(0), sc.test_crop)
            _write_case(test, "Ts", f"phantom_{k:03d}", *arrs, ph.affine)
            cases.append({"case": f"phantom_{k:03d}", "source": "phantom head", "shape": list(arrs[0].shape)})
        write_json({"cases": cases, "spacing": [0.5, 0.5, 0.7], "crop": sc.test_crop}, test / "test.json")
    info["test"] = json.loads((test / "test.json").read_text())["cases"]
    return info

# ---------------------------------------------------------------------------------------------- GANs
def gan_config(variant: str, sc: Scale, n_pairs: int):
    "The variant's preset at the scale: the shipped generator's settings (demo preset) with the variant's critic and precision."
    from tof3dgan.core import get_preset
    if sc.name == "paper": return get_preset(VARIANTS[variant], n_train=n_pairs)
    w = sc.gan_width * (2 if variant == "c-SN-MP" else 1)
    return get_preset(VARIANTS[variant], width=w, patch=sc.patch, batch_size=8, epochs=max(1, math.ceil(sc.gan_steps / max(1, n_pairs // 8))),
                      n_train=n_pairs, snapshot_n=0, channels_last=True, label_encoding="symmetric", keep_last=1)

def train_gans(out: Path, sc: Scale, variants, device="auto") -> dict:
    from tof3dgan.data.store import PatchStore
    from tof3dgan.train import Trainer
    store = PatchStore(out / "store", "gan_train")
    res = {}
    for v in variants:
        run, cfg = out / "gans" / v, gan_config(v, sc, len(store))
        done = json.loads((run / "done.json").read_text()) if (run / "done.json").is_file() else {}
        if done.get("epochs") == cfg.epochs and done.get("width") == cfg.width:
            res[v] = done; continue
        t0, c0 = time.time(), time.process_time()
        tr = Trainer(cfg, store, run, device=device, resume=run.exists(), progress=False, tensorboard=False)
        tr.fit()
        res[v] = {"epochs": cfg.epochs, "steps": tr.step, "width": cfg.width, "seconds": round(time.time() - t0, 1),
                  "cpu_seconds": round(time.process_time() - c0, 1), "pairs": len(store), "skipped": tr.skipped}
        (run / "done.json").write_text(json.dumps(res[v]))
        log(f"GAN {v}: {tr.step} steps in {res[v]['seconds']:.0f} s")
    return res

def shipped_generator(sc: Scale):
    "(weights path, model card) of the shipped generator when present and its patch matches the scale's, else None."
    if not sc.shipped: return None
    try: from tof3dgan.pretrained import DEFAULT_MODEL, list_models, model_card, model_path
    except ImportError: return None
    if DEFAULT_MODEL not in list_models(): return None
    card = model_card(DEFAULT_MODEL)
    if tuple(card["config"]["patch"]) != tuple(sc.patch): return None
    return model_path(DEFAULT_MODEL), card

def generate_sets(out: Path, sc: Scale, variants, device="auto") -> dict:
    from tof3dgan.data.store import PatchStore
    from tof3dgan.generate import generate
    n = sc.n_syn or len(PatchStore(out / "store", "seg_train"))
    gens = {v: out / "gans" / v / "checkpoint.pt" for v in variants}
    sh = shipped_generator(sc)
    if sh is not None: gens["shipped"] = sh[0]
    res = {}
    for v, ck in gens.items():
        dst = out / "syn" / v
        if not (dst / "generation.json").is_file():
            t0 = time.time()
            generate(ck, n, dst, batch_size=8, seed=1, device=device, progress=False, overwrite=True)
            log(f"generated {n} pairs from {v} in {time.time() - t0:.0f} s")
        g = json.loads((dst / "generation.json").read_text())
        res[v] = {"n": n, "mean_vessel_fraction": g["mean_vessel_fraction"], "threshold": g["threshold"],
                  "generator_sha256": g["checkpoint_sha256"]}
    return res

# ---------------------------------------------------------------------------------------------- U-Nets
def unet_sources(out: Path, syn_names, mixed=None) -> dict:
    "{U-Net name: training sources}: real, each synthetic set, and real + each synthetic set in `mixed` (None: all)."
    src = {"real": [out / "store"]}
    for v in syn_names: src[v] = [out / "syn" / v]
    for v in syn_names:
        if mixed is None or v in mixed: src[f"real + {v}"] = [out / "store", out / "syn" / v]
    return src

def train_unets(out: Path, sc: Scale, syn_names, device="auto", only=None) -> dict:
    from tof3dgan.segment.unet import seg_preset
    from tof3dgan.segment.train import SegTrainer
    cfg = seg_preset(sc.unet_preset, **sc.unet)
    res = {}
    for name, src in unet_sources(out, syn_names, sc.mixed).items():
        if only and name not in only: continue
        run = out / "unets" / _dir(name)
        t0, c0 = time.time(), time.process_time()
        tr = SegTrainer(cfg, src, out / "store", run, device=device, resume=run.exists(), progress=False)
        tr.fit()
        res[name] = {"epochs": tr.epoch, "steps": tr.step, "best_val_dsc": tr.best["dsc"], "best_epoch": tr.best["epoch"],
                     "stopped_early": tr.stopped, "pairs": len(tr.train), "seconds": round(sum(h["seconds"] for h in tr.history), 1)}
        log(f"U-Net {name}: {tr.step} steps, best val DSC {tr.best['dsc']:.3f} (epoch {tr.best['epoch']}) in {time.time() - t0:.0f} s")
    return res

def predict_all(out: Path, sc: Scale, syn_names, device="auto") -> dict:
    from tof3dgan.segment.predict import calibrate_contrast, calibrate_floor, predict
    res = {"min_contrast": calibrate_contrast(out / "store", progress=False)}   # from the real training patients
    for name in unet_sources(out, syn_names, sc.mixed):
        dst = out / "pred" / _dir(name)
        if not (dst / "predictions.json").is_file():
            t0 = time.time()
            predict(out / "test", dst, checkpoint=out / "unets" / _dir(name), device=device, progress=False, overwrite=True,
                    min_contrast=res["min_contrast"])
            log(f"predicted with U-Net {name} in {time.time() - t0:.0f} s")
        res[name] = round(sum(c["seconds"] for c in json.loads((dst / "predictions.json").read_text())["cases"]), 1)
    dst = out / "pred" / "threshold"
    if not (dst / "predictions.json").is_file():
        t = calibrate_floor(out / "store", progress=False)
        predict(out / "test", dst, threshold=t, progress=False, overwrite=True)
    res["threshold"] = json.loads((dst / "predictions.json").read_text())["threshold"]
    return res

def score_all(out: Path, syn_names, mixed=None):
    import pandas as pd
    from tof3dgan.segment.score import score_predictions
    frames = []
    for name in list(unet_sources(out, syn_names, mixed)) + ["threshold"]:
        df = score_predictions(out / "pred" / _dir(name), out / "test", progress=False)
        frames.append(df.assign(source="threshold floor" if name == "threshold" else name))
    scores = pd.concat(frames, ignore_index=True)
    scores.to_csv(out / "scores.csv", index=False)
    return scores

# ---------------------------------------------------------------------------------------------- report
def _md(df) -> str:
    "A DataFrame with (region, metric) columns as a Markdown table."
    cols = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in df.columns]
    rows = ["| source | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    rows += ["| " + str(i) + " | " + " | ".join(str(v) for v in r) + " |" for i, r in zip(df.index, df.values)]
    return "\n".join(rows)

def report(out: Path, results: Path, sc: Scale, syn_names, meta: dict) -> dict:
    import pandas as pd
    from tof3dgan.core import write_json
    from tof3dgan.data.io import read_volume
    from tof3dgan.viz import save_fig
    from tof3dgan.segment.score import seg_table, paper_table, dsc_ratio, score_boxplot, error_figure
    scores = pd.read_csv(out / "scores.csv")
    results.mkdir(parents=True, exist_ok=True)
    order = ["threshold floor", "real"] + list(syn_names) + [f"real + {v}" for v in syn_names]
    order = [o for o in order if o in set(scores.source)]
    table = seg_table(scores).loc[order]
    table.to_csv(results / "table.csv")
    ratios = {f"{v} / real ({reg})": round(dsc_ratio(scores, v, "real", reg), 3)
              for v in order if v not in ("real", "threshold floor") for reg in ("all", "intracranial")}
    mean = scores.groupby(["source", "region"]).dsc.mean().unstack()
    syn = [v for v in syn_names if v in mean.index]
    best_syn = max(syn, key=lambda v: mean.loc[v, "intracranial"]) if syn else None
    save_fig(score_boxplot(scores, order=order, title=f"e04 ({sc.name} scale): DSC and bAVD per test volume"), results / "fig6.png", dpi=70)
    case = sorted(scores.case.unique())[0]
    img, lab, brn = (read_volume(out / "test" / d / f"{case}{s}.nii.gz")[0]
                     for d, s in (("imagesTs", "_0000"), ("labelsTs", ""), ("brainmasksTs", "")))
    show = [s for s in ["threshold floor", "real", best_syn, f"real + {best_syn}" if best_syn else None] if s in order]
    preds = {s: read_volume(out / "pred" / ("threshold" if s == "threshold floor" else _dir(s)) / f"{case}_mask.nii.gz")[0] for s in show}
    save_fig(error_figure(img, preds, lab, brn, title=f"e04 ({sc.name} scale): test volume {case}"), results / "fig7.png", dpi=55)
    summary = {"scale": sc.name, "scale_settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sc.__dict__.items()},
               "best_synthetic": best_syn, "ratios": ratios, "mean_dsc": mean.round(4).to_dict(orient="index"),
               "table": {src: {" ".join(map(str, c)): v for c, v in row.items()} for src, row in table.to_dict(orient="index").items()},
               **meta}
    write_json(summary, results / "summary.json")
    (results / "table.md").write_text(_md(table) + "\n\nPaper (PEGASUS test set, Table 3 and A.1):\n\n" + _md(paper_table()) + "\n")
    return summary

def _work_minutes(out: Path) -> dict:
    "Wall minutes of the work recorded in the run folder itself (also when stages ran in separate processes)."
    import csv
    gans = sum(json.loads(p.read_text())["seconds"] for p in (out / "gans").glob("*/done.json"))
    unets = sum(float(r["seconds"]) for p in (out / "unets").glob("*/log.csv") for r in csv.DictReader(open(p)))
    pred = sum(c["seconds"] for p in (out / "pred").glob("*/predictions.json") for c in json.loads(p.read_text())["cases"])
    m = {"gans": gans / 60, "unets (training epochs)": unets / 60, "predict": pred / 60}
    return {k: round(v, 1) for k, v in {**m, "total": sum(m.values())}.items()}

# ---------------------------------------------------------------------------------------------- driver
def run(out, scale: str = "quick", stages=STAGES, results=None, masks=None, variants=tuple(VARIANTS), device="auto",
        store=None, test=None, **overrides) -> dict:
    "Run (or continue) e04 in `out` at `scale`; returns what the stages produced (also kept in OUT/info.json)."
    from _machine import machine
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    sc = replace(SCALES[scale], **overrides)
    if masks is None:
        from tof3dgan.core import real_data_dir
        d = real_data_dir()
        masks = d / "vessel_masks" if d is not None and (d / "vessel_masks").is_dir() else None
    if store is not None and not (out / "store").exists(): (out / "store").symlink_to(Path(store).resolve())
    if test is not None and not (out / "test").exists(): (out / "test").symlink_to(Path(test).resolve())
    tfile = out / "timings.json"
    times = json.loads(tfile.read_text()) if tfile.is_file() else {}
    info = json.loads((out / "info.json").read_text()) if (out / "info.json").is_file() else {}
    def stage(name, fn):
        if name not in stages: return
        t0, c0 = time.time(), time.process_time(); log(f"stage {name} ...")
        info[name] = fn()
        add = name != "report"                                  # stages run in pieces add up; the report is redone
        times[name] = round((times.get(name, 0) if add else 0) + time.time() - t0, 1)
        times[f"{name}_cpu"] = round((times.get(f"{name}_cpu", 0) if add else 0) + time.process_time() - c0, 1)
        tfile.write_text(json.dumps(times, indent=1)); (out / "info.json").write_text(json.dumps(info, indent=1, default=str))
        log(f"stage {name} done in {time.time() - t0:.0f} s")
    stage("data", lambda: make_data(out, sc, masks))
    stage("gans", lambda: train_gans(out, sc, variants, device))
    syn = list(variants) + (["shipped"] if shipped_generator(sc) is not None else [])
    stage("generate", lambda: generate_sets(out, sc, variants, device))
    stage("unets", lambda: train_unets(out, sc, syn, device))
    stage("predict", lambda: predict_all(out, sc, syn, device))
    stage("score", lambda: {f"{k[0]} | {k[1]}": v for k, v in score_all(out, syn, sc.mixed).groupby(["source", "region"]).dsc.mean().round(4).items()})
    meta = {"machine": machine(), "load_average_at_report": os.getloadavg(), "stage_seconds": times,
            "total_wall_minutes": round(sum(times.get(k, 0) for k in STAGES[:-1]) / 60, 1),
            "total_cpu_minutes": round(sum(times.get(f"{k}_cpu", 0) for k in STAGES[:-1]) / 60, 1),
            "work_minutes": _work_minutes(out),
            "gans": {p.parent.name: json.loads(p.read_text()) for p in sorted((out / "gans").glob("*/done.json"))},
            "unets": info.get("unets"), "synthetic": info.get("generate"), "test": info.get("data", {}).get("test"),
            "threshold_floor": (info.get("predict") or {}).get("threshold"), "min_contrast": (info.get("predict") or {}).get("min_contrast")}
    if "report" in stages:
        info["report"] = report(out, Path(results) if results else out / "report", sc, syn, meta)
        (out / "info.json").write_text(json.dumps(info, indent=1, default=str))
    return info

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--scale", default="cpu", choices=list(SCALES))
    p.add_argument("--out", required=True, help="run folder (continued when it exists)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--results", help="folder for table, figures, summary.json (default OUT/report)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="GAN variants to train (default all four)")
    p.add_argument("--masks", help="folder of real vessel masks (default ../shared/data/real/vessel_masks)")
    p.add_argument("--store", help="paper scale: a patch store from `tof3dgan prepare` (128x128x64 patches)")
    p.add_argument("--test", help="paper scale: a test folder (imagesTs/, labelsTs/, brainmasksTs/)")
    p.add_argument("--gan-width", type=int, help="GAN width (c-SN-MP twice this; default: the scale's)")
    p.add_argument("--gan-steps", type=int, help="generator steps per GAN (default: the scale's)")
    p.add_argument("--heads", type=int, help="phantom heads for training and validation (default: the scale's)")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    ov = {k: v for k, v in (("gan_width", a.gan_width), ("gan_steps", a.gan_steps), ("heads", a.heads)) if v is not None}
    if a.scale == "paper" and not (a.store and a.test):
        p.error("--scale paper needs --store (a patch store with 128x128x64 patches) and --test (a test folder)")
    info = run(a.out, a.scale, tuple(a.stages.split(",")), a.results, Path(a.masks) if a.masks else None,
               tuple(a.variants.split(",")) if a.variants else (), a.device, a.store, a.test, **ov)
    if "report" in info:
        print(json.dumps({k: info["report"][k] for k in ("ratios", "total_wall_minutes", "total_cpu_minutes", "threshold_floor", "min_contrast")}, indent=1))

if __name__ == "__main__":
    main()
