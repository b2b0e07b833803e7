"""A synthfer output as a PyTorch dataset, thin over webdataset:

    import torch, synthfer.data
    train = synthfer.data.dataset("out/demo", split="train", label="va", image_size=64)
    loader = torch.utils.data.DataLoader(train, batch_size=64, num_workers=2)
    for images, va in loader: ...          # float [B, 3, 64, 64] in [0, 1]; float [B, 2]

The shards of a split are the committed ones its markers list (never a half-written or unmarked
file), at a local path or any fsspec URL (`s3://...`; credentials as for the build). Any image
format (png, jpg, webp). Shuffling mixes identities: shard order is shuffled, `mix` shards are
read at once with their samples interleaved, and a `buffer` of samples is shuffled (each shard
holds whole identities, so without this a batch would hold a handful of people).

DataLoader workers: a DataLoader takes each batch from one worker, so a worker must mix as many
identities as one process would. When each worker's share of the split would fill at least two
shuffle buffers (and holds `mix` shards), each worker reads its own shards: its buffer then
mixes as many identities as one process's. Otherwise (smaller splits) every worker reads the
split's shards in the same order and keeps every N-th sample of each, decoding only those.
Either way each sample comes once per pass.
"""

from __future__ import annotations

import io
import json
import random
from itertools import cycle, islice

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from synthfer.errors import UsageError
from synthfer.io.folder import OutputFolder, open_folder
from synthfer.io.layout import layout_of
from synthfer.io.shards import ShardStore

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
LABELS = ("va", "class", "both")
SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def shard_urls(out, split: str = "train", storage_options: dict | None = None) -> list[str]:
    """Names webdataset can open of the committed accepted shards of a split, in shard order."""
    return [url for url, _ in _split_shards(out, split, storage_options)]


def _split_shards(out, split: str, storage_options: dict | None = None) -> list[tuple[str, int]]:
    """(url, accepted images) of the committed shards of a split, in shard order."""
    folder = out if isinstance(out, OutputFolder) else open_folder(out, storage_options)
    if split not in SPLITS:
        raise UsageError(f"split: must be train, val (or validation) or test, got {split!r}")
    split = SPLITS[split]
    layout = layout_of(folder)
    try:
        committed = ShardStore(folder, layout).committed()
    except OSError as err:
        raise UsageError(f"{folder.location}: cannot read the output: {err.strerror or err}") from None
    if not committed:
        raise UsageError(f"{folder.location}: no committed shards; is it a synthfer output?")
    urls = [(folder.url(layout.tar(i, m.get("split", ""))), int(m.get("accepted") or 0))
            for i, m in sorted(committed.items()) if m.get("split") == split]
    if not urls:
        raise UsageError(f"{folder.location}: no {split} shards")
    if not folder.is_local:
        _register_fsspec(folder.protocol, folder.storage_options)
    return urls


def dataset(out, split: str = "train", label: str = "va", image_size: int | None = None, shuffle: bool = True,
            buffer: int = 2000, mix: int = 8, seed: int | None = None, storage_options: dict | None = None):
    """An IterableDataset of (image, label): image float [3, H, W] in [0, 1] (resized to
    image_size x image_size when given), label float [valence, arousal] ("va"), the int class_id
    ("class") or {"va", "class_id"} ("both"). Several DataLoader workers split the shards.
    seed: None shuffles differently every pass; an int gives the same order every pass."""
    import webdataset as wds

    if label not in LABELS:
        raise UsageError(f"label: must be va, class or both, got {label!r}")
    folder = out if isinstance(out, OutputFolder) else open_folder(out, storage_options)
    shards = _split_shards(folder, split)
    urls = [url for url, _ in shards]
    if label != "va" and not folder.exists(layout_of(folder).classes):   # class_id would be -1 everywhere
        raise UsageError(f"label: {label!r} needs classes, and {folder.location} was built without "
                         f"targets.classes (it has no classes.json); use label='va'")
    # every worker reads the whole split when its own share would not fill two shuffle buffers
    buffers = sum(n for _, n in shards) / (2 * buffer) if shuffle else float("inf")
    stages = [wds.SimpleShardList(urls), _worker_share(mix if shuffle else 1, shuffle, seed, buffers)]
    if shuffle:
        stages.append(wds.shuffle(buffer, initial=buffer, seed=seed))
    stages.append(wds.map(_item(label, image_size)))
    return wds.DataPipeline(*stages)


def _worker_share(mix: int, shuffle: bool, seed: int | None, buffers: float = 0.0):
    """A pipeline stage: this worker's samples of the shards, interleaved `mix` at a time. The
    shard order is shuffled with a seed every worker of a pass shares (the caller's, or the
    DataLoader's base seed of this pass), so the workers' shares are disjoint and complete.
    Each worker reads its own shards only when there are `mix` per worker and each worker's
    share fills at least two shuffle buffers (`buffers`: the split's samples / two buffers);
    then its buffer mixes as many identities as one process's would."""
    passes = [0]

    def stage(shards):
        shards = list(shards)
        info = torch.utils.data.get_worker_info()
        workers, me = (info.num_workers, info.id) if info is not None else (1, 0)
        if shuffle:
            passes[0] += 1
            if seed is not None:
                order_seed = seed
            elif info is not None:   # worker seeds are the pass's base seed + worker id
                order_seed = (info.seed - info.id) * 1_000_003 + passes[0]
            else:
                order_seed = None
            random.Random(order_seed).shuffle(shards)
        if len(shards) >= mix * workers and buffers >= workers:
            yield from _interleave(shards[me::workers], mix)
        else:   # every shard's samples me, me + N, ...: each worker sees every shard's identities
            yield from _interleave(shards, mix, start=me, step=workers)
    return stage


def _interleave(shards: list, mix: int, start: int = 0, step: int = 1):
    """Read up to `mix` shards at once and take their samples in turn; of each shard, the samples
    start, start + step, ... (the others are read past, not decoded)."""
    import webdataset as wds

    def open_shard(shard):
        return islice(wds.tarfile_to_samples()([shard]), start, None, step)

    shards = iter(shards)
    streams = []
    for _ in range(mix):
        nxt = next(shards, None)
        if nxt is not None:
            streams.append(open_shard(nxt))
    while streams:
        for stream in cycle(list(streams)):
            sample = next(stream, None)
            if sample is not None:
                yield sample
                continue
            streams.remove(stream)
            nxt = next(shards, None)
            if nxt is not None:
                streams.append(open_shard(nxt))
            break


def _item(label: str, image_size: int | None):
    def item(sample: dict):
        ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        if ext is None:
            raise ValueError(f"{sample.get('__key__')}: no image member ({', '.join(IMAGE_EXTENSIONS)})")
        with Image.open(io.BytesIO(sample[ext])) as im:
            image = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy())
        image = image.permute(2, 0, 1).float().div_(255.0)
        if image_size is not None and tuple(image.shape[1:]) != (image_size, image_size):
            image = F.interpolate(image[None], size=(image_size, image_size), mode="bilinear",
                                  antialias=True, align_corners=False)[0].clamp_(0.0, 1.0)
        meta = json.loads(sample["json"])
        va = torch.tensor([meta["target_valence"], meta["target_arousal"]], dtype=torch.float32)
        if label == "va":
            return image, va
        if label == "class":
            return image, int(meta["class_id"])
        return image, {"va": va, "class_id": int(meta["class_id"])}
    return item


def _register_fsspec(protocol: str, options: dict) -> None:
    """Let webdataset open `protocol://` URLs through fsspec (S3, GCS, ...)."""
    import importlib

    gopen = importlib.import_module("webdataset.gopen")   # the module; `webdataset.gopen` is also a function

    def opener(url, mode="rb", bufsize=8192):
        import fsspec

        return fsspec.open(url, mode, **options).open()
    gopen.gopen_schemes[protocol] = opener
