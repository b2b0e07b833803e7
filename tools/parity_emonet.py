"""Numerical parity of synthfer's EmoNet with the authors' implementation (face-analysis/emonet).

    python tools/parity_emonet.py --reference /path/to/emonet-checkout

For 8 and 5 expression classes: fills the reference model with seeded random weights, BatchNorm
running statistics included (random means, positive variances), so that every term of the eval
forward matters; copies its state dict into synthfer's EmoNet (strict); runs both in eval mode on
one seeded random batch; prints the max abs difference per output and both parameter counts; then
exports synthfer's EmoNetVA to ONNX and compares onnxruntime with torch at batch sizes 1 and 3.
Exits 1 if torch-vs-torch differs by more than 1e-5 or onnx-vs-torch by more than 1e-4.

Not imported by the test suite: it needs the reference checkout, which synthfer does not ship.
Optional --write-keys DIR writes the key-layout fixtures (tests/fixtures/emonet-keys/).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synthfer.models.emonet import EmoNet, EmoNetVA, parameter_count

TORCH_TOL = 1e-5
ONNX_TOL = 1e-4
BATCH = 2


def reference_class(checkout: Path):
    # Imported after synthfer's module: the reference rebinds nn.InstanceNorm2d globally on import.
    sys.path.insert(0, str(checkout))
    from emonet.models.emonet import EmoNet as Reference
    return Reference


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Seeded random weights and BatchNorm statistics (random means, positive variances).

    Statistics drawn blindly let activations grow to ~1e4 over ~100 layers (the heatmap attention
    multiplies them further), where float32 rounding alone exceeds an absolute tolerance. So each
    BatchNorm, in forward order, measures its input on a random batch (upstream layers already
    randomized), then keeps those statistics perturbed: means shifted by ~0.2 std (Gaussian), variances
    scaled by 0.5-2x. They stay far from any default, so a mix-up of mean, variance, scale or shift
    would show, and outputs end up O(1) like a trained model's."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point() or "running_" in name:
                continue
            if name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1:  # BatchNorm scale
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            else:
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)

        def calibrate(norm, inputs):
            x = inputs[0]
            dims = [0, *range(2, x.dim())]
            mean, var = x.mean(dims), x.var(dims)
            if x.dim() == 2:
                # Pooled features of noise images barely differ between images, so their variance
                # alone would blow a new image's features up; use the second moment instead.
                var = var + mean.square()
            norm.running_mean.copy_(mean + 0.2 * var.sqrt() * torch.randn(mean.shape, generator=g))
            norm.running_var.copy_(var * torch.empty(var.shape).uniform_(-0.7, 0.7, generator=g).exp())

        hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in model.modules():
            m.train(False)  # the reference's eval() returns None, so no chaining
        model(torch.rand(4, 3, 256, 256, generator=g))
        for hook in hooks:
            hook.remove()


def onnx_difference(model: EmoNet, seed: int) -> tuple[float, float]:
    import onnxruntime as ort
    va = EmoNetVA(model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "emonet_va.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # synthfer uses the TorchScript exporter
            torch.onnx.export(va, (torch.rand(2, 3, 256, 256),), str(path), dynamo=False,
                              input_names=["image"], output_names=["va"],
                              dynamic_axes={"image": {0: "N"}, "va": {0: "N"}}, opset_version=17)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        worst, scale = 0.0, 0.0
        g = torch.Generator().manual_seed(seed)
        for n in (1, 3):
            x = torch.rand(n, 3, 256, 256, generator=g)
            with torch.no_grad():
                want = va(x).numpy()
            got = session.run(["va"], {"image": x.numpy()})[0]
            assert got.shape == (n, 2), got.shape
            worst = max(worst, float(np.abs(got - want).max()))
            scale = max(scale, float(np.abs(want).max()))
    return worst, scale


def key_lines(state: dict[str, torch.Tensor]) -> list[str]:
    return [f"{k}\t{'x'.join(map(str, v.shape)) or 'scalar'}" for k, v in state.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of face-analysis/emonet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-keys", type=Path, help="write emonet_{8,5}.txt key layouts here")
    parser.add_argument("--commit", help="reference commit named in the fixture header "
                                         "(default: git rev-parse HEAD of --reference)")
    args = parser.parse_args()
    Reference = reference_class(args.reference)
    torch.manual_seed(args.seed)
    failed = False

    for n_expression in (8, 5):
        ref = Reference(n_expression=n_expression)
        randomize(ref, args.seed + n_expression)
        ref.eval()  # the reference's eval() only reaches children (and returns None)
        ours = EmoNet(n_expression=n_expression)
        ours.load_state_dict(ref.state_dict(), strict=True)
        ours.eval()
        same_layout = [(k, v.shape) for k, v in ref.state_dict().items()] == \
                      [(k, v.shape) for k, v in ours.state_dict().items()]
        x = torch.rand(BATCH, 3, 256, 256, generator=torch.Generator().manual_seed(args.seed))
        with torch.no_grad():
            want, got = ref(x.clone()), ours(x.clone())
        print(f"EmoNet n_expression={n_expression}: parameters ours {parameter_count(ours):,}, "
              f"reference {sum(p.numel() for p in ref.parameters()):,}; "
              f"state_dict entries {len(ours.state_dict())}, same names/shapes/order: {same_layout}")
        failed |= not same_layout
        for key in ("heatmap", "expression", "valence", "arousal"):
            assert got[key].shape == want[key].shape, (key, got[key].shape, want[key].shape)
            diff = float((got[key] - want[key]).abs().max())
            scale = float(want[key].abs().max())
            ok = diff <= TORCH_TOL
            failed |= not ok
            print(f"  {key:<10} {tuple(want[key].shape)!s:<18} max |ours - ref| {diff:.3e}  "
                  f"(max |ref| {scale:.3e}) {'ok' if ok else 'FAIL'}")
        if n_expression == 8:
            # Negative control: one statistic deep in the first hourglass must move the outputs,
            # or the comparison above could not have seen a mistake there.
            with torch.no_grad():
                ours.m0.b2_plus_1.bn2.running_var.mul_(1.5)
                moved = ours(x.clone())
                ours.m0.b2_plus_1.bn2.running_var.div_(1.5)
            diff = max(float((moved[k] - want[k]).abs().max()) for k in ("valence", "arousal"))
            ok = diff > 100 * TORCH_TOL
            failed |= not ok
            print(f"  control: m0.b2_plus_1.bn2.running_var x1.5 moves valence/arousal by {diff:.3e} "
                  f"{'ok' if ok else 'FAIL (comparison has no power)'}")
        diff, scale = onnx_difference(ours, args.seed)
        ok = diff <= ONNX_TOL
        failed |= not ok
        print(f"  EmoNetVA onnxruntime vs torch (batch 1 and 3): max abs {diff:.3e} "
              f"(max |va| {scale:.3e}) {'ok' if ok else 'FAIL'}")

        if args.write_keys:
            git = subprocess.run(["git", "-C", str(args.reference), "rev-parse", "HEAD"],
                                 check=False, capture_output=True, text=True)
            commit = args.commit or git.stdout.strip() or "unknown"
            args.write_keys.mkdir(parents=True, exist_ok=True)
            header = (f"# state_dict layout of emonet_{n_expression}.pth without the 'module.' prefix "
                      f"(name<TAB>shape, 0-d tensors as 'scalar'), in state_dict order. From "
                      f"github.com/face-analysis/emonet commit {commit}: "
                      f"EmoNet(n_expression={n_expression}).state_dict() of "
                      f"emonet/models/emonet.py, written by tools/parity_emonet.py --write-keys")
            text = "\n".join([header, *key_lines(ref.state_dict())]) + "\n"
            (args.write_keys / f"emonet_{n_expression}.txt").write_text(text)

    print("FAIL" if failed else f"OK: torch within {TORCH_TOL:g}, onnx within {ONNX_TOL:g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
