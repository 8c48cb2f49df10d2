"Rewrite a study EMA state as a tof3dgan checkpoint with the weight average as G_ema (config g_ema = its decay)."
import sys, torch
from tof3dgan.checkpoint import save_checkpoint
def convert(src, dst, decay):
    st = torch.load(src, map_location="cpu", weights_only=False)
    st["config"]["g_ema"] = decay
    st["G_ema"] = st["G"]
    save_checkpoint(st, dst)
    return dst
if __name__ == "__main__": convert(sys.argv[1], sys.argv[2], float(sys.argv[3]))
