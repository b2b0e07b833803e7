"""StyleGAN2 generator in plain PyTorch (no custom CUDA ops), rosinality state-dict layout.

Numerics follow NVIDIA's stylegan2-ada-pytorch forward pass (checked against the fixture in
tests/fixtures): equalised learning rate applied at run time, modulated convolutions computed as
"scale the input, run one conv shared by the whole batch, scale the output" so every sample in a
batch sees exactly the same weights, and constant per-layer noise so outputs are deterministic.

Parameter/buffer names are rosinality's (``style.1.weight``, ``convs.0.conv.weight``, ...) so a
converted ``stylegan2-ffhq-config-f.pt`` loads directly; NVIDIA checkpoints go through
``synthfer.models.checkpoints.nvlabs_to_rosinality``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


def channels_for(
    resolution: int,
    channel_base: int | None = None,
    channel_max: int = 512,
    channel_multiplier: float | None = None,
) -> dict[int, int]:
    """Feature-map widths {res: channels} for res = 4, 8, ..., resolution.

    NVlabs rule: ``min(channel_base // res, channel_max)``. rosinality table: 512 up to 32 px,
    then ``16384 * channel_multiplier / res`` (64: 256*cm, ..., 1024: 16*cm), capped by
    channel_max. With neither given, NVlabs' default base 32768 (identical to config-f, cm=2).
    """
    if channel_base is not None and channel_multiplier is not None:
        raise ValueError("give channel_base (NVlabs) or channel_multiplier (rosinality), not both")
    _check_resolution(resolution)
    out = {}
    for log2 in range(2, int(math.log2(resolution)) + 1):
        res = 2**log2
        if channel_multiplier is not None:
            out[res] = min(channel_max, 512 if res <= 32 else int(16384 * channel_multiplier) // res)
        else:
            out[res] = min((channel_base or 32768) // res, channel_max)
    return out


def _check_resolution(resolution: int) -> None:
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")


def blur_kernel(gain: float = 1.0) -> torch.Tensor:
    """4x4 separable [1,3,3,1] filter normalised to sum ``gain`` (4 keeps mean intensity on 2x upsampling)."""
    taps = torch.tensor(BLUR_TAPS)
    k = torch.outer(taps, taps)
    return k / k.sum() * gain


class PixelNorm(nn.Module):
    """Normalises z by its second moment, so its scale never matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: stored weights are N(0,1)/lr_mul, scaled at run time."""

    def __init__(
        self,
        in_dim: int,            # input features
        out_dim: int,           # output features
        bias_init: float = 0.0, # initial (effective) bias; 1 for style affines so styles start at 1
        lr_mul: float = 1.0,    # mapping layers use 0.01; stored values are divided by it
        activation: bool = False,  # leaky ReLU(0.2) * sqrt(2) after the bias
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init) / lr_mul))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            x = F.linear(x, self.weight * self.scale) + self.bias * self.lr_mul
            return F.leaky_relu(x, 0.2) * SQRT2
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    """Depthwise FIR filter with symmetric zero padding (upfirdn2d with up=down=1)."""

    def __init__(
        self,
        pad: int,       # zeros added on each side
        gain: float,    # filter sum (4 after a stride-2 transposed conv)
    ):
        super().__init__()
        self.register_buffer("kernel", blur_kernel(gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        # upfirdn2d convolves (flipped filter); conv2d correlates, hence the flip.
        k = self.kernel.flip([0, 1]).to(x.dtype).expand(c, 1, 4, 4)
        return F.conv2d(x, k, padding=self.pad, groups=c)


class Upsample(nn.Module):
    """2x FIR upsampling of the RGB skip: zero-insertion, pad (2, 1), [1,3,3,1] filter with gain 4."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", blur_kernel(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        # A stride-2 transposed conv is zero-insertion followed by a true convolution padded by 3;
        # padding=1 trims one sample per side, i.e. upfirdn2d's pads (2, 1) on the inserted grid.
        k = self.kernel.to(x.dtype).expand(c, 1, 4, 4)
        return F.conv_transpose2d(x, k, stride=2, padding=1, groups=c)


class ModulatedConv2d(nn.Module):
    """Style-modulated conv: x*s -> one conv shared by the batch -> per-sample demodulation."""

    def __init__(
        self,
        in_ch: int,              # input channels
        out_ch: int,             # output channels
        kernel: int,             # 3 for styled convs, 1 for to-RGB
        w_dim: int,              # style vector size
        demodulate: bool = True, # False only for to-RGB
        upsample: bool = False,  # transposed conv stride 2 + blur: output is exactly 2x
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel, kernel))
        if upsample:
            # Transposed 3x3 conv gives 2H+1; pad 1 per side and a 4-tap filter give exactly 2H.
            self.blur = Blur(pad=1, gain=4.0)
        self.modulation = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2
        self.upsample = upsample
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        assert w.ndim == 2 and w.shape[0] == n, (tuple(x.shape), tuple(w.shape))
        s = self.modulation(w) * self.scale  # [N, Cin]: per-sample input-channel scale
        weight = self.weight[0]
        x = x * s.reshape(n, c, 1, 1)
        if self.upsample:
            x = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            x = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum_{i,k} (W[o,i,k] s[i])^2 == (s^2) . (sum_k W[o,i,k]^2): no per-sample weight copy.
            d = torch.rsqrt(F.linear(s.square(), weight.square().sum(dim=(2, 3))) + 1e-8)
            x = x * d.reshape(n, -1, 1, 1)
        return x


class NoiseInjection(nn.Module):
    """Adds strength * noise after the conv, before bias and activation."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """Bias, leaky ReLU(0.2), gain sqrt(2), optional symmetric clamp (NVlabs conv_clamp)."""

    def __init__(
        self,
        channels: int,                  # bias size
        clamp: float | None = None,     # NVlabs conv_clamp, None = off
    ):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(x + self.bias.reshape(1, -1, 1, 1), 0.2) * SQRT2
        return x if self.clamp is None else x.clamp(-self.clamp, self.clamp)


class StyledConv(nn.Module):
    """Modulated 3x3 conv + constant noise + bias/activation: one synthesis layer, one w row."""

    def __init__(
        self,
        in_ch: int,                     # input channels
        out_ch: int,                    # output channels
        w_dim: int,                     # style vector size
        upsample: bool = False,         # first layer of each resolution doubles the size
        clamp: float | None = None,     # NVlabs conv_clamp, None = off
    ):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch, clamp)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB, plus the upsampled RGB of the previous resolution."""

    def __init__(
        self,
        in_ch: int,                     # feature channels
        w_dim: int,                     # style vector size
        upsample: bool = True,          # False only at 4 px, where there is no skip yet
        clamp: float | None = None,     # NVlabs conv_clamp, None = off
    ):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, w_dim, demodulate=False)
        self.clamp = clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = self.upsample(skip) + out
        return out


class ConstantInput(nn.Module):
    """Learned 4x4 starting feature map, shared by all samples."""

    def __init__(self, channels: int):  # width at 4 px
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, n: int) -> torch.Tensor:
        return self.input.expand(n, -1, -1, -1)


class Generator(nn.Module):
    """StyleGAN2 (config-e/f, skip architecture) generator: z -> w+ -> image [N, 3, R, R]."""

    channels_for = staticmethod(channels_for)

    def __init__(
        self,
        resolution: int,                            # output size, power of two >= 8
        z_dim: int = 512,                           # latent z size
        w_dim: int = 512,                           # intermediate latent w size
        n_mlp: int = 8,                             # mapping-network layers
        channels: Mapping[int, int] | None = None,  # {res: width} for 4..resolution; None = channels_for(resolution)
        lr_mul: float = 0.01,                       # mapping learning-rate multiplier (weights stored / lr_mul)
        conv_clamp: float | None = None,            # NVlabs conv_clamp (e.g. 256 in some .pkl), None = off
    ):
        super().__init__()
        _check_resolution(resolution)
        log2 = int(math.log2(resolution))
        ch = dict(channels) if channels is not None else channels_for(resolution)
        missing = [2**i for i in range(2, log2 + 1) if 2**i not in ch]
        if missing:
            raise ValueError(f"channels has no width for resolutions {missing}")
        self.resolution, self.z_dim, self.w_dim, self.n_mlp = resolution, z_dim, w_dim, n_mlp
        self.channels = {2**i: int(ch[2**i]) for i in range(2, log2 + 1)}
        self.n_latent = 2 * log2 - 2
        self.num_layers = 2 * log2 - 3  # styled convs, one constant noise map each

        dims = [z_dim] + [w_dim] * n_mlp
        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(dims[i], dims[i + 1], lr_mul=lr_mul, activation=True) for i in range(n_mlp)],
        )
        self.register_buffer("latent_avg", torch.zeros(w_dim))
        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], w_dim, clamp=conv_clamp)
        self.to_rgb1 = ToRGB(self.channels[4], w_dim, upsample=False, clamp=conv_clamp)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for i in range(3, log2 + 1):
            c_in, c_out = self.channels[2 ** (i - 1)], self.channels[2**i]
            self.convs.append(StyledConv(c_in, c_out, w_dim, upsample=True, clamp=conv_clamp))
            self.convs.append(StyledConv(c_out, c_out, w_dim, clamp=conv_clamp))
            self.to_rgbs.append(ToRGB(c_out, w_dim, clamp=conv_clamp))
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)  # 4, 8, 8, 16, 16, ...
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))

    def mapping(
        self,
        z: torch.Tensor,                        # [N, z_dim]
        truncation_psi: float = 1.0,            # 1 = no truncation; w <- avg + psi * (w - avg)
        truncation_cutoff: int | None = None,   # truncate only the first `cutoff` rows; None = all
    ) -> torch.Tensor:
        """z -> w+ [N, n_latent, w_dim] (the same w in every row before truncation)."""
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be [N, {self.z_dim}], got {tuple(z.shape)}"
        w = self.style(z)
        ws = w.unsqueeze(1).repeat(1, self.n_latent, 1)
        if truncation_psi != 1:
            avg = self.latent_avg.to(ws.dtype)
            if truncation_cutoff is None:
                ws = avg.lerp(ws, truncation_psi)
            else:
                if truncation_cutoff < 0:
                    raise ValueError(f"truncation_cutoff must be >= 0, got {truncation_cutoff}")
                head = avg.lerp(ws[:, :truncation_cutoff], truncation_psi)
                ws = torch.cat([head, ws[:, truncation_cutoff:]], dim=1)
        return ws

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """w+ [N, n_latent, w_dim] -> raw float image [N, 3, R, R] (about [-1, 1] for trained weights)."""
        assert ws.ndim == 3 and ws.shape[1:] == (self.n_latent, self.w_dim), (
            f"ws must be [N, {self.n_latent}, {self.w_dim}], got {tuple(ws.shape)}"
        )
        noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        x = self.conv1(self.input(ws.shape[0]), ws[:, 0], noise[0])
        img = self.to_rgb1(x, ws[:, 1])
        # Row i feeds the up-conv, i+1 the conv, i+2 to-RGB; to-RGB's row is reused by the next up-conv.
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1
            x = self.convs[2 * j](x, ws[:, i], noise[2 * j + 1])
            x = self.convs[2 * j + 1](x, ws[:, i + 1], noise[2 * j + 2])
            img = to_rgb(x, ws[:, i + 2], img)
        assert img.shape[1:] == (3, self.resolution, self.resolution)
        return img

    def forward(
        self,
        z: torch.Tensor,                        # [N, z_dim]
        truncation_psi: float = 1.0,            # see mapping()
        truncation_cutoff: int | None = None,   # see mapping()
    ) -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi, truncation_cutoff))

    @torch.no_grad()
    def mean_w(self, n_samples: int = 4096, seed: int = 0) -> torch.Tensor:
        """Mean mapping output over seeded z (for checkpoints without latent_avg).

        Computed in float64 on CPU and rounded once to float32, so the result does not depend on
        thread count or BLAS blocking.
        """
        net = copy.deepcopy(self.style).to(device="cpu", dtype=torch.float64)
        g = torch.Generator(device="cpu").manual_seed(seed)
        z = torch.randn(n_samples, self.z_dim, generator=g, dtype=torch.float64)
        return net(z).mean(dim=0).to(self.latent_avg.dtype)


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Raw synthesis output [N, 3, H, W] -> uint8 [N, H, W, 3] (NVlabs: clamp(x*127.5+128, 0, 255))."""
    assert img.ndim == 4 and img.shape[1] == 3, f"img must be [N, 3, H, W], got {tuple(img.shape)}"
    x = img.permute(0, 2, 3, 1) * 127.5     # the one float temporary; the rest in place, same arithmetic
    return x.add_(128).clamp_(0, 255).to(torch.uint8)
