"""Peak memory of loading an EmoStyle editor saved by EmoStyle's training script.

That file holds the editor's weights (73.2 M parameters, 293 MB) plus two Adam optimiser states
(exp_avg and exp_avg_sq each as large as the weights): 1.46 GB. Every build worker loads the
editor, so reading the whole file costs each of them that peak. synthfer maps the file and copies
out only the weights (models/formats/torch_file.py). This writes such a file at full size (random
values), then loads it in two fresh processes side by side: a plain `torch.load` of the whole file
followed by loading the weights (what synthfer did before), and synthfer's `load_editor`; it
prints each process's peak resident memory (VmHWM, Linux) and the ratio.

    python bench/editor_load_memory.py [--dir /tmp]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WHOLE = """
import sys, torch
from synthfer.models.emostyle import EmoMappingWplus
obj = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
editor = EmoMappingWplus()
editor.load_state_dict(obj["emo_mapping_state_dict"])
del obj
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""

SYNTHFER = """
import sys
from synthfer.models.checkpoints import load_editor
editor = load_editor(sys.argv[1])
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""

BASELINE = """
import torch
from synthfer.models.checkpoints import load_editor
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""


def write_training_checkpoint(path: Path) -> int:
    import torch

    from synthfer.models.emostyle import EmoMappingWplus

    torch.manual_seed(0)
    editor = EmoMappingWplus()
    params = list(editor.parameters())

    def adam() -> dict:
        state = {i: {"step": torch.tensor(1000.0), "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
                 for i, p in enumerate(params)}
        return {"state": state, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8,
                                                  "weight_decay": 0, "amsgrad": False,
                                                  "params": list(range(len(params)))}]}

    torch.save({"emo_mapping_state_dict": editor.state_dict(), "epoch": 10,
                "emo_mapping_optimizer": adam(), "optimizer_2": adam()}, path)
    return sum(p.numel() for p in params)


def peak_mib(code: str, *args: str) -> float:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True,
                         cwd=ROOT).stdout
    return int(out.strip().splitlines()[-1]) / 1024   # VmHWM (KiB): this process's own peak; unlike
    # ru_maxrss it is not inherited from the parent across exec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to write the 1.46 GB file (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "emo_mapping_wplus_training.pt"
        n = int(subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'bench'); "
                                "from editor_load_memory import write_training_checkpoint as w; "
                                f"print(w(__import__('pathlib').Path({str(path)!r})))"],
                               check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()[-1])
        size = path.stat().st_size
        base = peak_mib(BASELINE)
        whole = peak_mib(WHOLE, str(path))
        mapped = peak_mib(SYNTHFER, str(path))
    print(f"file: {size / 1e9:.2f} GB ({n / 1e6:.1f} M parameters = {n * 4 / 1e6:.0f} MB of weights, "
          f"plus two Adam states)")
    print(f"peak RSS, torch + synthfer imported, nothing loaded: {base:7.0f} MiB")
    print(f"peak RSS, torch.load of the whole file:             {whole:7.0f} MiB (+{whole - base:.0f})")
    print(f"peak RSS, synthfer load_editor (mmap, weights only): {mapped:7.0f} MiB (+{mapped - base:.0f})")
    print(f"ratio (whole / synthfer), above the baseline: {(whole - base) / max(mapped - base, 1):.2f}x")


if __name__ == "__main__":
    main()
