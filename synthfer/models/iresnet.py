"""MagFace's iResNet face-embedding backbone (iResNet50, iResNet100) in plain PyTorch.

Why: MagFace scores face quality by the L2 norm of its *un-normalised* 512-d embedding, so the
network must reproduce the released weights' raw output, not just its direction. This module is
synthfer's own implementation; its state-dict names and shapes are those of the backbone in
IrvingMeng/MagFace (models/iresnet.py), so the released checkpoints load after their training
prefix is stripped. tests/fixtures/magface-keys/ pins that layout and tools/parity_magface.py
checks the numbers against the reference code.

Network: a 3x3 stem (conv, BN, PReLU), four stages of "improved" residual blocks
(BN, 3x3 conv, BN, PReLU, 3x3 conv with the stage's stride, BN; plus a strided 1x1 conv + BN
shortcut on each stage's first block), then BN, dropout, flatten 512x7x7, Linear to the
embedding, BatchNorm1d. Blocks per stage: iResNet50 (3, 4, 14, 3), iResNet100 (3, 13, 30, 3).

Input convention (MagFace's inference/gen_feat.py): an aligned 112x112 crop as OpenCV reads it,
BGR channel order, float32 values x / 255, no mean or std. Quality = ``embedding.norm(dim=1)``.

Checkpoints: ``torch.save({"epoch", "arch", "state_dict", ...})`` where the backbone's keys sit
under ``features.module.`` (DDP training, e.g. magface_epoch_00025.pth) or ``module.features.``
(DataParallel training), next to the margin head's weight (``fc.weight``, ``parallel_fc.weight``
or ``module.fc.weight``), which inference does not use and ``load_magface`` drops.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthfer.errors import ModelFileError

DEPTHS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
INPUT_SIZE = 112                          # aligned crop side; the head's Linear expects 7x7 after 4 halvings
EMBEDDING_SIZE = 512
STAGE_WIDTHS = (64, 128, 256, 512)
BN_EPS = 2e-5                             # MXNet's default, kept by every ArcFace/MagFace port
BN_MOMENTUM = 0.9                         # as in the reference; only matters if someone trains this

# Where the backbone sits in the checkpoints people have: DDP-wrapped features (the released
# iResNet100, MagFace's trainer_dist.py), DataParallel-wrapped builder (trainer.py), DataParallel-
# wrapped bare backbone, unwrapped builder (inference's NetworkBuilder_inf), bare backbone.
# Order matters: the two-level prefixes must win over their first halves.
PREFIXES = ("features.module.", "module.features.", "module.", "features.", "")
_STEM_KEY = "conv1.weight"                # every backbone has exactly one; it locates the prefix

_SHOWN = 4                                # offending keys named in one error line


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class IResBlock(nn.Module):
    """Pre-activation-style residual block; the stride sits on the second conv, as trained."""

    def __init__(
        self,
        in_channels: int,   # channels entering the block
        channels: int,      # channels of both convs and of the output
        stride: int = 1,    # 2 on each stage's first block (halves H and W), else 1
    ):
        super().__init__()
        # Attribute order fixes state-dict order; it follows the reference so key lists compare 1:1.
        self.bn1 = _bn2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
        self.bn2 = _bn2d(channels)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn3 = _bn2d(channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            _bn2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        # No activation after the sum: the next block's bn1 is the only thing between blocks.
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """[N, 3, 112, 112] float32 BGR in [0, 1] -> [N, embedding_size] un-normalised embedding."""

    def __init__(
        self,
        layers: tuple[int, int, int, int],     # residual blocks per stage, e.g. DEPTHS[100]
        embedding_size: int = EMBEDDING_SIZE,  # output width (the reference's `num_classes`)
        dropout: float = 0.4,                  # channel dropout before the head; training only
    ):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be 4 positive block counts, got {tuple(layers)}")
        self.layers = tuple(int(n) for n in layers)
        self.embedding_size = embedding_size
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], 3, 1, 1, bias=False)
        self.bn1 = _bn2d(STAGE_WIDTHS[0])
        self.prelu = nn.PReLU(STAGE_WIDTHS[0])
        in_channels = STAGE_WIDTHS[0]
        for index, (width, blocks) in enumerate(zip(STAGE_WIDTHS, self.layers), start=1):
            stage = [IResBlock(in_channels if i == 0 else width, width, 2 if i == 0 else 1)
                     for i in range(blocks)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            in_channels = width
        side = INPUT_SIZE // 2 ** len(STAGE_WIDTHS)
        self.bn2 = _bn2d(STAGE_WIDTHS[-1])
        self.dropout = nn.Dropout2d(dropout)
        self.fc = nn.Linear(STAGE_WIDTHS[-1] * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._init_weights()

    def _init_weights(self) -> None:
        # He init for convs and identity BNs: a fresh network trains; loaded weights replace it all.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Checked in eager mode only: while ONNX export traces, sizes are graph values and a
        # Python check on them would only produce tracer warnings.
        checking = not torch.jit.is_tracing()
        if checking:
            assert x.ndim == 4 and tuple(x.shape[1:]) == (3, INPUT_SIZE, INPUT_SIZE), (
                f"x must be [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], got {tuple(x.shape)}")
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # flatten(1) is channel-major, the order the trained Linear expects (and ONNX's Flatten).
        x = self.fc(torch.flatten(self.dropout(self.bn2(x)), 1))
        x = self.features(x)
        if checking:
            assert x.ndim == 2 and x.shape[1] == self.embedding_size, tuple(x.shape)
        return x


def iresnet50(embedding_size: int = EMBEDDING_SIZE) -> IResNet:
    return IResNet(DEPTHS[50], embedding_size)


def iresnet100(embedding_size: int = EMBEDDING_SIZE) -> IResNet:
    return IResNet(DEPTHS[100], embedding_size)


def parameter_count(module: nn.Module) -> int:
    """Learnable values (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())


def load_magface(path: str | Path, depth: int | None = None) -> IResNet:
    """iResNet in eval mode from a MagFace checkpoint (any layout in PREFIXES, margin head dropped).

    `depth` (50 or 100) defaults to what the file's blocks per stage say. Every problem is a
    ModelFileError whose message is one line naming the file.
    """
    path = Path(path)
    state = _backbone_state(path, _read(path))
    blocks = _blocks_per_stage(state)
    known = ", ".join(f"{d}: {b}" for d, b in DEPTHS.items())
    if depth is None:
        depth = next((d for d, b in DEPTHS.items() if b == blocks), None)
        if depth is None:
            raise ModelFileError(f"{path}: an iResNet with {blocks} blocks per stage; "
                                 f"known depths are {known}")
    elif depth not in DEPTHS:
        raise ModelFileError(f"{path}: iResNet depth {depth} is not one of {sorted(DEPTHS)}")
    elif DEPTHS[depth] != blocks:
        raise ModelFileError(f"{path}: asked for iResNet{depth} {DEPTHS[depth]} but the file has "
                             f"{blocks} blocks per stage")
    fc = state.get("fc.weight")
    embedding_size = fc.shape[0] if isinstance(fc, torch.Tensor) and fc.ndim == 2 else EMBEDDING_SIZE
    # Built on the meta device then given uninitialised memory: the file overwrites every value,
    # so random init of ~65M weights would be wasted time.
    with torch.device("meta"):
        model = IResNet(DEPTHS[depth], embedding_size)
    model = model.to_empty(device="cpu")
    expected = model.state_dict()
    # Files from before BatchNorm counted batches lack these; eval never reads them.
    for key, value in expected.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value, device="cpu")
    problems = _layout_problems(state, expected)
    if problems:
        raise ModelFileError(f"{path}: not an iResNet{depth} MagFace backbone: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _read(path: Path) -> Any:
    from synthfer.models.formats.torch_file import load_object

    return load_object(path)


def _backbone_state(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelFileError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict or state dict")
    keys = [k for k in obj if isinstance(k, str)]
    prefix = next((p for p in PREFIXES if p + _STEM_KEY in obj), None)
    if prefix is None:
        shown = ", ".join(sorted(keys)[:_SHOWN])
        raise ModelFileError(f"{path}: no iResNet stem {_STEM_KEY} under any of the prefixes "
                             f"{', '.join(p for p in PREFIXES if p)} or none; keys start {shown}")
    # Keys outside the backbone's prefix are the margin head (whose weight, once a bare prefix is
    # stripped, would even collide with the backbone's own fc.weight) and are left behind.
    state = {k[len(prefix):]: v for k, v in obj.items() if isinstance(k, str) and k.startswith(prefix)}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFileError(f"{path}: state dict entries that are not tensors: {_names(bad)}")
    return state


def _blocks_per_stage(state: Mapping[str, torch.Tensor]) -> tuple[int, int, int, int]:
    counts = [0, 0, 0, 0]
    for key in state:
        found = re.match(r"layer([1-4])\.(\d+)\.", key)
        if found:
            stage = int(found.group(1)) - 1
            counts[stage] = max(counts[stage], int(found.group(2)) + 1)
    return tuple(counts)  # type: ignore[return-value]


def _layout_problems(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> list[str]:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} (expected {list(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {_names(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {_names(wrong)}")
    return problems


def _names(items: list[str]) -> str:
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more
