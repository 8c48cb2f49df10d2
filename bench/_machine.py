"Describe the machine a benchmark ran on (CPU model, cores, memory, torch, threads, GPU)."
import os, platform
import torch

def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
    except OSError: pass
    try: mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError): mem = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "torch": str(torch.__version__),
            "threads": torch.get_num_threads(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}

def table(rows: list, cols: list) -> str:
    "A plain-text table of dict rows."
    w = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    line = lambda vals: "  ".join(str(v).ljust(w[c]) for c, v in zip(cols, vals))
    return "\n".join([line(cols), line(["-" * w[c] for c in cols])] + [line([r.get(c, "") for c in cols]) for r in rows])
