"""How many identities a shuffled batch holds: synthfer.data's default shuffle vs reading the shards
in order vs a uniform shuffle of the whole split (the ideal), on one output, measured side by side.

Shards hold whole identities, so reading them in order gives batches of a handful of people;
synthfer.data shuffles shard order, reads `mix` shards at once interleaved and shuffles a buffer.

    python bench/shuffle_mix.py OUT [--split train] [--batch 64] [--passes 5] [--workers N]

--workers N measures batches as a DataLoader with N workers delivers them: each batch comes from
one worker, which reads only its share of the shards.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def identities_per_batch(keys: list[str], batch: int) -> float:
    ids = [k.split("_", 1)[0] for k in keys]
    counts = [len(set(ids[i:i + batch])) for i in range(0, len(ids) - batch + 1, batch)]
    return float(np.mean(counts)) if counts else 0.0


def loader_keys(out: str, split: str, seed: int | None, shuffle: bool, **kw) -> list[str]:
    import synthfer.data as sd

    ds = sd.dataset(out, split=split, shuffle=shuffle, seed=seed, **kw)
    ds.pipeline[-1] = lambda src: (s["__key__"] for s in src)   # keys only: no image decoding
    return list(ds)


def _keys_only(src):
    return (s["__key__"] for s in src)


def loader_batches(out: str, split: str, seed: int, batch: int, workers: int) -> float:
    """Identities per batch of a DataLoader with `workers` workers over synthfer.data's default shuffle."""
    import torch

    import synthfer.data as sd

    ds = sd.dataset(out, split=split, seed=seed)
    ds.pipeline[-1] = _keys_only
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=list)
    counts = [len({k.split("_", 1)[0] for k in keys}) for keys in loader if len(keys) == batch]
    return float(np.mean(counts)) if counts else 0.0


def measure(out: str, split: str = "train", batch: int = 64, passes: int = 5, workers: int = 0) -> dict:
    ordered = loader_keys(out, split, 0, shuffle=False)
    rng = np.random.default_rng(0)
    uniform = np.mean([identities_per_batch(list(rng.permutation(ordered)), batch) for _ in range(passes)])
    if workers:
        default = np.mean([loader_batches(out, split, p, batch, workers) for p in range(passes)])
    else:
        default = np.mean([identities_per_batch(loader_keys(out, split, p, shuffle=True), batch)
                           for p in range(passes)])
    return {"samples": len(ordered), "identities": len({k.split('_', 1)[0] for k in ordered}), "batch": batch,
            "workers": workers,
            "in_order": round(identities_per_batch(ordered, batch), 1), "synthfer_data": round(float(default), 1),
            "uniform": round(float(uniform), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--split", default="train")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: read in this process)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = measure(args.out, args.split, args.batch, args.passes, args.workers)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{args.out} {args.split}: {r['samples']} samples of {r['identities']} identities; identities per "
              f"batch of {r['batch']}: in shard order {r['in_order']}, synthfer.data "
              f"({r['workers']} workers) {r['synthfer_data']}, "
              f"uniform shuffle {r['uniform']} ({100 * r['synthfer_data'] / r['uniform']:.0f}% of uniform)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
