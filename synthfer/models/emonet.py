"""EmoNet (Toisoul et al., Nature Machine Intelligence 2021): face -> expression, valence, arousal.

synthfer scores generated faces on the valence/arousal circumplex with EmoNet, the network of the
released ``emonet_8.pth`` / ``emonet_5.pth`` checkpoints. This is synthfer's own implementation,
written so that those files load with ``strict=True`` (same state-dict names and shapes, once the
``module.`` prefix DataParallel added is stripped) and so that eval-mode outputs equal the
original's (tools/parity_emonet.py checks both against the authors' code).

The network is a two-stack FAN (face alignment network: hourglasses of Bulat's multi-scale
residual blocks) that predicts 68 landmark heatmaps, followed by an emotion branch. Every norm is
BatchNorm with running statistics: the original code writes InstanceNorm2d but rebinds that name to
BatchNorm2d, and the checkpoints hold the statistics. The emotion branch sees the stem features
and every stack's features, the latter scaled by the summed heatmaps of the last stack, so it
attends to where the landmarks are. The final FC gives n_expression logits, then valence, arousal.

Not carried over: the original's optional temporal smoothing (a stateful moving average over video
frames, not part of any checkpoint) and its attention-free variant (a different checkpoint layout).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from synthfer.errors import ModelFileError, first_line

IMAGE_SIZE = 256        # input side; the emotion branch's pooling only reduces to 1x1 at this size
N_LANDMARKS = 68        # heatmap channels (the 68-point iBUG layout)
WIDTH = 256             # channels of the stem output, of every hourglass and of the emotion branch
HOURGLASS_DEPTH = 4     # each hourglass halves 64x64 features down to 4x4 and back
N_EMO_BLOCKS = 4        # emotion-branch blocks, each followed by a 2x max pool (64 -> 4)
N_AFFECT = 2            # regression outputs after the expression logits: valence, arousal
_MAX_LISTED = 3         # offending keys named in a load error


class MultiScaleBlock(nn.Module):
    """FAN's residual block: three pre-activated 3x3 convs whose outputs (out/2, out/4, out/4
    channels) are concatenated, so one block mixes receptive fields of 3, 5 and 7 pixels."""

    def __init__(
        self,
        in_channels: int,   # input channels
        out_channels: int,  # output channels; a 1x1 projection aligns the skip when they differ
    ):
        super().__init__()
        half, quarter = out_channels // 2, out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, half, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, 3, padding=1, bias=False)
        # Index 1 is the (parameter-free) ReLU; the checkpoint names the projection "downsample.2".
        self.downsample = (nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                                         nn.Conv2d(in_channels, out_channels, 1, bias=False))
                           if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale3 = self.conv1(F.relu(self.bn1(x)))
        scale5 = self.conv2(F.relu(self.bn2(scale3)))
        scale7 = self.conv3(F.relu(self.bn3(scale5)))
        skip = x if self.downsample is None else self.downsample(x)
        return torch.cat((scale3, scale5, scale7), 1) + skip


class Hourglass(nn.Module):
    """One FAN hourglass. Level L (HOURGLASS_DEPTH at the top, 1 at the bottom) owns blocks
    ``b1_L`` (skip at this resolution), ``b2_L`` (after the 2x max pool) and ``b3_L`` (before the
    2x nearest upsample); the bottom level adds ``b2_plus_1``. Blocks are registered in the order
    the original's recursion creates them, so state_dict() lists keys in the checkpoint's order."""

    def __init__(
        self,
        depth: int = HOURGLASS_DEPTH,  # number of 2x poolings between input and bottleneck
        width: int = WIDTH,            # channels throughout
    ):
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):
            setattr(self, f"b1_{level}", MultiScaleBlock(width, width))
            setattr(self, f"b2_{level}", MultiScaleBlock(width, width))
        self.b2_plus_1 = MultiScaleBlock(width, width)
        for level in range(1, depth + 1):
            setattr(self, f"b3_{level}", MultiScaleBlock(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in range(self.depth, 0, -1):
            skips.append(getattr(self, f"b1_{level}")(x))
            x = getattr(self, f"b2_{level}")(F.max_pool2d(x, 2, stride=2))
        x = self.b2_plus_1(x)
        for level in range(1, self.depth + 1):
            x = F.interpolate(getattr(self, f"b3_{level}")(x), scale_factor=2, mode="nearest")
            x = skips.pop() + x
        return x


class EmoNet(nn.Module):
    """EmoNet with the released checkpoints' layout.

    forward(x): x float32 [N, 3, 256, 256], RGB in [0, 1] (a face crop resized to 256). Returns
    ``heatmap`` [N, 68, 64, 64] (last stack's landmark heatmaps), ``expression`` [N, n_expression]
    (logits), ``valence`` [N] and ``arousal`` [N] (trained on [-1, 1], not clamped).
    """

    def __init__(
        self,
        n_expression: int = 8,  # expression classes: 8 (emonet_8.pth) or 5 (emonet_5.pth)
        n_stacks: int = 2,      # FAN hourglass stacks (2 in both released checkpoints)
    ):
        super().__init__()
        if n_expression < 1 or n_stacks < 1:
            raise ValueError(f"EmoNet needs n_expression >= 1 and n_stacks >= 1, "
                             f"got {n_expression} and {n_stacks}")
        self.n_expression, self.n_stacks = n_expression, n_stacks
        # Stem: 256 -> 128 (strided conv) -> 64 (max pool after conv2).
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = MultiScaleBlock(64, 128)
        self.conv3 = MultiScaleBlock(128, 128)
        self.conv4 = MultiScaleBlock(128, WIDTH)
        for i in range(n_stacks):
            setattr(self, f"m{i}", Hourglass())
            setattr(self, f"top_m_{i}", MultiScaleBlock(WIDTH, WIDTH))
            setattr(self, f"conv_last{i}", nn.Conv2d(WIDTH, WIDTH, 1))
            setattr(self, f"bn_end{i}", nn.BatchNorm2d(WIDTH))
            setattr(self, f"l{i}", nn.Conv2d(WIDTH, N_LANDMARKS, 1))
            if i < n_stacks - 1:
                # Features and heatmaps re-enter the next stack through these projections.
                setattr(self, f"bl{i}", nn.Conv2d(WIDTH, WIDTH, 1))
                setattr(self, f"al{i}", nn.Conv2d(N_LANDMARKS, WIDTH, 1))
        self.conv1x1_input_emo_2 = nn.Conv2d(WIDTH * (n_stacks + 1), WIDTH, 1)
        emo_layers: list[nn.Module] = []
        for _ in range(N_EMO_BLOCKS):
            emo_layers += [MultiScaleBlock(WIDTH, WIDTH), nn.MaxPool2d(2, 2)]
        self.emo_net_2 = nn.Sequential(*emo_layers)
        self.emo_fc_2 = nn.Sequential(nn.Linear(WIDTH, 128), nn.BatchNorm1d(128), nn.ReLU(),
                                      nn.Linear(128, n_expression + N_AFFECT))

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(heatmap [N, 68, 64, 64], FC output [N, n_expression + 2])."""
        if not torch.jit.is_tracing():  # a trace (ONNX export) fixes all but N from its example
            assert x.dim() == 4 and tuple(x.shape[1:]) == (3, IMAGE_SIZE, IMAGE_SIZE), \
                f"EmoNet expects [N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}], got {list(x.shape)}"
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(self.conv2(x), 2, stride=2)
        stem = self.conv4(self.conv3(x))

        stack_in, features = stem, []
        for i in range(self.n_stacks):
            f = getattr(self, f"top_m_{i}")(getattr(self, f"m{i}")(stack_in))
            f = F.relu(getattr(self, f"bn_end{i}")(getattr(self, f"conv_last{i}")(f)))
            heatmap = getattr(self, f"l{i}")(f)
            if i < self.n_stacks - 1:
                # The emotion branch takes the projected features, not the pre-projection ones.
                f = getattr(self, f"bl{i}")(f)
                stack_in = stack_in + f + getattr(self, f"al{i}")(heatmap)
            features.append(f)

        # Attention: all landmark channels summed into one map that weights the stack features
        # (the stem features pass unweighted).
        attention = heatmap.sum(dim=1, keepdim=True)
        emo = torch.cat((stem, torch.cat(features, 1) * attention), 1)
        emo = self.emo_net_2(self.conv1x1_input_emo_2(emo))
        emo = F.avg_pool2d(emo, 4).flatten(1)
        return heatmap, self.emo_fc_2(emo)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        heatmap, out = self._heads(x)
        return {"heatmap": heatmap, "expression": out[:, :-N_AFFECT],
                "valence": out[:, -2], "arousal": out[:, -1]}


class EmoNetVA(nn.Module):
    """The part of EmoNet synthfer uses (and exports to ONNX): [N, 3, 256, 256] -> [N, 2] =
    (valence, arousal), unclamped; synthfer clamps to [-1, 1] itself."""

    def __init__(
        self,
        emonet: EmoNet,  # weights to read; shared, not copied
    ):
        super().__init__()
        self.emonet = emonet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, out = self.emonet._heads(x)
        return out[:, -N_AFFECT:]


def parameter_count(module: nn.Module) -> int:
    """Number of learnable values (parameters, not BatchNorm statistics)."""
    return sum(p.numel() for p in module.parameters())


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def _shape_text(shape: torch.Size) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from synthfer.models.formats.torch_file import load_object

    obj = load_object(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ModelFileError(f"{path}: not an EmoNet checkpoint (expected a state dict of tensors, "
                             f"got {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_emonet(path: str | Path) -> EmoNet:
    """EmoNet (eval mode) from an ``emonet_{8,5}.pth``-style state dict: bare or under
    ``state_dict``, with or without DataParallel's ``module.`` prefix. n_expression comes from the
    final FC's width. Any mismatch raises ModelFileError naming the file and the first keys."""
    path = Path(path)
    state = _read_state_dict(path)
    fc = state.get("emo_fc_2.3.weight")
    n_expression = fc.shape[0] - N_AFFECT if fc is not None and fc.dim() == 2 else 8
    if n_expression < 1:
        raise ModelFileError(f"{path}: emo_fc_2.3.weight has {fc.shape[0]} outputs; EmoNet needs "
                             f"n_expression + {N_AFFECT} with n_expression >= 1")
    model = EmoNet(n_expression=n_expression)
    expected = model.state_dict()
    for key, value in expected.items():
        # Files saved by PyTorch < 0.4.1 have no BatchNorm step counters; eval never reads them.
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    problems = []
    missing = [k for k in expected if k not in state]
    if missing:
        problems.append(f"missing keys {_listed(missing)}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        problems.append(f"unexpected keys {_listed(unexpected)}")
    wrong = [f"{k} ({_shape_text(v.shape)}, expected {_shape_text(expected[k].shape)})"
             for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        problems.append(f"wrong shapes {_listed(wrong)}")
    if problems:
        raise ModelFileError(f"{path}: not an EmoNet checkpoint: {'; '.join(problems)}")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as err:  # noqa: BLE001 - e.g. a dtype that cannot be copied in
        raise ModelFileError(f"{path}: EmoNet weights do not load ({first_line(err)})") from None
    return model.eval()
