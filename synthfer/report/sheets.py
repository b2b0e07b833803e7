"""Contact sheets: a few identities x their targets, one sheet per intensity, for eyeballing.

Each tile is framed green (accepted), light green (surplus: passed, over its quota), red
(rejected, reasons abbreviated under it) or grey (skipped). Rejected images exist only when the
build kept them (output.keep_rejected, in rejected/rejected-NNNNNN.tar); otherwise, as for
surplus ones, the tile says so. The first identities are taken because
they share the first shard, so only one or two tars are opened.
"""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from synthfer.filters import reasons, short_label
from synthfer.io.folder import OutputFolder
from synthfer.report.load import NEUTRAL, POINTS, Run

IDENTITIES = 5
TILE = 80                  # thumbnail side in pixels (smaller images are not enlarged)
_FRAME, _CAPTION = 3, 13
_COLOURS = {"accepted": (46, 125, 50), "surplus": (129, 199, 132), "rejected": (198, 40, 40),
            "skipped": (158, 158, 158)}
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _read_images(folder: OutputFolder, layout, rows: pd.DataFrame, tile: int) -> dict[str, Image.Image]:
    """key -> thumbnail for the given rows, from the shard tars (and rejected tars when kept)."""
    wanted, found = set(rows["key"]), {}
    tars = []
    for shard, split in sorted(set(zip(rows["shard"].dropna().astype(int), rows["split"]))):
        tars += [layout.tar(shard, split), layout.rejected_tar(shard, split)]
    for rel in tars:
        if not folder.exists(rel):
            continue
        try:
            with folder.open(rel) as f, tarfile.open(fileobj=f, mode="r:") as tar:
                for member in tar:
                    stem, dot, ext = member.name.rpartition(".")
                    if stem in wanted and f".{ext.lower()}" in _IMAGE_EXTENSIONS and stem not in found:
                        data = tar.extractfile(member).read()
                        img = Image.open(io.BytesIO(data)).convert("RGB")
                        img.thumbnail((tile, tile), Image.Resampling.LANCZOS)
                        found[stem] = img
        except (OSError, tarfile.TarError, UnidentifiedImageError):
            continue  # a damaged tar only costs its tiles, which then read "missing"
    return found


def _caption(row) -> str:
    if row.status == "accepted":
        return "ok"
    reasons = list(row.reject_reasons) if row.reject_reasons is not None else []
    return " ".join(short_label(r) for r in reasons) or row.status


def _sheet(columns: list[str], identities: list, cells: dict, images: dict, title: str,
           tile: int, row_label=lambda identity: f"identity {identity}") -> Image.Image:
    font, small = _font(11), _font(9)
    cell = tile + 2 * _FRAME
    left, head, legend = 96, 90, 22
    width = left + len(columns) * (cell + 2)
    height = 24 + head + len(identities) * (cell + _CAPTION + 4) + legend
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 5), title, fill="black", font=font)
    for j, target in enumerate(columns):
        # column headers written sideways: 29 names side by side only fit rotated
        label = Image.new("L", (head - 4, 12), 255)
        ImageDraw.Draw(label).text((0, 0), target, fill=0, font=small)
        label = label.rotate(90, expand=True)
        sheet.paste(Image.merge("RGB", [label] * 3), (left + j * (cell + 2) + cell // 2 - 6, 24))
    for i, identity in enumerate(identities):
        y = 24 + head + i * (cell + _CAPTION + 4)
        draw.text((6, y + cell // 2 - 12), row_label(identity), fill="black", font=small)
        for j, target in enumerate(columns):
            x = left + j * (cell + 2)
            row = cells.get((identity, target))
            if row is None:
                continue
            colour = _COLOURS.get(row.status, (0, 0, 0))
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
            img = images.get(row.key)
            if img is not None:
                sheet.paste(img, (x + _FRAME + (tile - img.width) // 2, y + _FRAME + (tile - img.height) // 2))
            else:
                draw.rectangle([x + _FRAME, y + _FRAME, x + cell - 1 - _FRAME, y + cell - 1 - _FRAME],
                               fill=(235, 235, 235))
                text = {"skipped": "skipped", "rejected": "not kept"}.get(row.status, "missing")
                draw.text((x + 8, y + cell // 2 - 6), text, fill=(90, 90, 90), font=small)
            draw.text((x + 1, y + cell + 1), _caption(row), fill=colour, font=small)
    y = height - legend + 4
    legend = ", ".join(f"{rule.short} {reason.replace('_', ' ')}" for reason, rule in reasons().items())
    draw.text((6, y), f"frame: green accepted, red rejected, grey skipped. {legend}", fill=(60, 60, 60), font=small)
    return sheet


def contact_sheets(run: Run, identities: int = IDENTITIES) -> list[tuple[str, Image.Image]]:
    """[(file stem, image)]: one sheet per intensity (neutral in the first column of each), plus
    one for raw VA points. Empty when the manifest has no rows."""
    f = run.frame
    if f.empty:
        return []
    chosen = _spread(f, identities)
    worst = _worst_accepted(f)
    picked = f["identity"].isin(chosen).to_numpy() | f.index.isin(worst.index)
    rows = f[picked]
    reasons = pd.Series([[] for _ in range(len(rows))], index=rows.index, dtype=object)
    # reasons of the chosen rows only, from the flat (row, reason) pairs
    pos = np.flatnonzero(picked)
    lookup = {p: i for i, p in enumerate(pos)}
    sel = np.isin(run.reason_rows, pos)
    for r, value in zip(run.reason_rows[sel].tolist(), run.reason_values[sel].tolist()):
        reasons.iloc[lookup[r]].append(value)
    rows = rows.assign(reject_reasons=reasons)
    images = _read_images(run.folder, run.layout, rows[rows["status"] != "skipped"], TILE)
    worst_rows = rows.loc[rows.index.isin(worst.index)]
    rows = rows[rows["identity"].isin(chosen)]
    # tiles as large as the images, up to TILE: small (demo) images are not framed in wide margins
    tile = max((max(im.size) for im in images.values()), default=TILE)
    cells = {(r.identity, r.target): r for r in rows.itertuples(index=False)}
    order = list(pd.unique(rows["target"]))  # manifest order: neutral, then emotions, then points
    neutral = [t for t in order if t == NEUTRAL]
    named = rows[~rows["direction"].isin([NEUTRAL, POINTS])]
    sheets = []
    for level in named["intensity"].cat.categories:
        targets = [t for t in order if t in set(named.loc[named["intensity"] == level, "target"])]
        if targets:
            title = f"{run.name}: identities x targets at intensity {level}"
            sheets.append((f"sheet-{round(float(level) * 100):03d}", _sheet(neutral + targets, chosen, cells,
                                                                              images, title, tile)))
    points = [t for t in order if t in set(rows.loc[rows["direction"] == POINTS, "target"])]
    if points:
        sheets.append(("sheet-points", _sheet(neutral + points, chosen, cells, images,
                                              f"{run.name}: identities x raw valence/arousal points", tile)))
    if not sheets and neutral:
        sheets.append(("sheet-neutral", _sheet(neutral, chosen, cells, images, f"{run.name}: neutral", tile)))
    if len(worst_rows):
        sheets.append(_worst_sheet(run, worst_rows, images, tile))
    return sheets


WORST = 6   # accepted examples per class on the "worst accepted" sheet


def _spread(f: pd.DataFrame, n: int) -> list[int]:
    """Up to n identities taken in turn from each split, so every split is looked at."""
    by_split = [sorted(f.loc[f["split"] == s, "identity"].unique()) for s in ("train", "val", "test")]
    out = []
    for k in range(n):
        for ids in by_split:
            if k < len(ids) and len(out) < n:
                out.append(int(ids[k]))
    return sorted(out)


def _worst_accepted(f: pd.DataFrame) -> pd.DataFrame:
    """Per class (per direction without classes) the accepted samples furthest from their label:
    largest direction error, else lowest quality."""
    accepted = f[f["status"] == "accepted"]
    if accepted.empty:
        return accepted
    group = accepted["class"].where(accepted["class"] != "", accepted["direction"].astype(str))
    score = accepted["direction_error_deg"].fillna(-accepted["quality"].fillna(0.0))
    ranked = accepted.assign(_group=group, _score=score).sort_values(["_group", "_score", "key"],
                                                                       ascending=[True, False, True])
    return ranked.groupby("_group", sort=False).head(WORST)


def _worst_sheet(run: Run, rows: pd.DataFrame, images: dict, tile: int) -> tuple[str, Image.Image]:
    rows = _worst_accepted(rows)
    groups = list(pd.unique(rows["_group"]))
    cells = {}
    for g, part in rows.groupby("_group", sort=False):
        for rank, r in enumerate(part.itertuples(index=False), start=1):
            cells[(g, str(rank))] = r
    columns = [str(k) for k in range(1, WORST + 1)]
    title = f"{run.name}: worst accepted examples per class (largest direction error first)"
    return "sheet-worst", _sheet(columns, groups, cells, images, title, tile, row_label=str)
