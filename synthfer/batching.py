"""execution.batch_size: auto -> a number, from the generator's shape and the device.

Never from timing or free memory: the batch size changes output bytes (a few pixels by one
level, through the convolutions' blocking), so auto must give the same number for the same
recipe, weights and device type on every run. The resolved number is what the fingerprint,
run.json and the log show; writing that number in the recipe gives the same build.

On a CPU the page-fault cliff (glibc serving each large activation with fresh pages) is handled
by the allocator settings (synthfer/runtime.py); with them, batches of 4 to 32 run within ~10% of
each other at 256 px, so auto only keeps a batch's activations within a memory budget. On a GPU
the budget is a share of the device's total memory (largest batch that fits, with headroom).
"""

from __future__ import annotations

CPU_BUDGET = 2 << 30          # bytes of synthesis activations per batch on a CPU
GPU_SHARE = 0.5               # of the device's total memory: weights, assessment and cuDNN work space use the rest
UNSEEN_GPU_MEMORY = 16 << 30  # a driver that cannot see the workers' GPUs (Ray) assumes this much
LIMIT = {"cpu": 16, "cuda": 64}
# Live float32 feature maps per resolution per image (a layer's input and output). Measured on a
# CPU: the 256 px builtin (channels 64) grows by 25 MB of RSS per image of batch (batch 16 vs 4;
# this estimate: 28 MB), a 1024 px config-f by ~560 MB (about 9 GB at batch 16; estimate 525 MB).
LIVE_MAPS = 2


def per_image_bytes(generator) -> int:
    """Synthesis activation bytes of one image: channels x side^2 float32 maps per resolution."""
    channels = getattr(generator, "channels", None)
    if not channels:   # a model kind without the StyleGAN2 layout: assume 64 channels at every size
        side, channels = generator.resolution, {}
        while side >= 4:
            channels[side] = 64
            side //= 2
    return sum(LIVE_MAPS * 4 * ch * side * side for side, ch in channels.items())


def resolve(batch_size, generator, device) -> int:
    """The batch size a build runs with: the recipe's number, or auto's (a power of two)."""
    if batch_size != "auto":
        return int(batch_size)
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        budget = GPU_SHARE * _device_memory(device)
    else:
        kind, budget = "cpu", CPU_BUDGET
    fits = max(1, int(budget // max(per_image_bytes(generator), 1)))
    size = 1
    while size * 2 <= min(fits, LIMIT[kind]):
        size *= 2
    return size


def _device_memory(device) -> int:
    import torch

    if torch.cuda.is_available():
        index = device.index if getattr(device, "index", None) is not None else 0
        return int(torch.cuda.get_device_properties(index).total_memory)
    return UNSEEN_GPU_MEMORY
