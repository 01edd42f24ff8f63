"""The review of a cleaning run: a ranked gallery of the flagged images and the table of the flagged rows.

``gallery.html`` shows, for each method that flagged anything (the ``remove_by`` methods first), its flagged
images in one grid ranked by score (most suspect first), each captioned with its rank, image id, the method and its
score, the given label and, for label issues, the suggested label. Thumbnails are small JPEG files in
``thumbs/`` beside the page (one per flagged image, shared by the sections), loaded lazily (``loading="lazy"``),
so the page stays a few hundred bytes per image and opens quickly at thousands of flagged images.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from runtime import gallery
from runtime.atomic import atomic_path
from runtime.errors import UserError
from runtime.gallery import Figure
from runtime.preprocess import open_rgb

THUMB_PX = 128


def flagged_rows(scores: pd.DataFrame, methods: list[str], remove_by: list[str]) -> pd.DataFrame:
    """The images flagged by any of ``remove_by``: image_id, label, ``flagged_by`` (the methods that flagged it,
    ``;``-separated, ``remove_by`` order), ``suggested_label`` (label issues only, else empty) and every
    ``<method>_score``; ranked (``rank`` 1 = most suspect) by ``percentile``: the highest share of images scoring
    lower, over the methods that flagged it, so methods with different score scales interleave fairly."""
    flags = scores[[f"{m}_flag" for m in remove_by]].to_numpy()
    keep = flags.any(axis=1)
    out = scores.loc[keep, ["image_id", "label"]].copy()
    out["flagged_by"] = [";".join(m for m, f in zip(remove_by, row, strict=True) if f) for row in flags[keep]]
    suggested = scores.get("suggested_label", pd.Series([""] * len(scores), index=scores.index))
    issue = scores["label_issues_flag"] if "label_issues" in remove_by else pd.Series(False, index=scores.index)
    out["suggested_label"] = suggested.where(issue, "")[keep]
    ranks = pd.DataFrame({m: scores[f"{m}_score"].rank(pct=True) for m in remove_by})[keep]
    out["rank_score"] = [ranks.loc[i, by.split(";")].max() for i, by in zip(out.index, out["flagged_by"], strict=True)]
    for m in methods:
        out[f"{m}_score"] = scores.loc[keep, f"{m}_score"]
    out = out.sort_values("rank_score", ascending=False, kind="stable").rename(columns={"rank_score": "percentile"})
    out.insert(0, "rank", range(1, len(out) + 1))
    return out


def thumb_name(image_id: str) -> str:
    """File name of an image's thumbnail (unique per id, safe in a URL)."""
    return hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:16] + ".jpg"


def write_thumbnails(image_ids: list[str], images: Path, folder: Path, size: int = THUMB_PX) -> set[str]:
    """Write a ``size``-pixel JPEG thumbnail of each image into ``folder`` (atomically, as one folder); returns
    the ids whose image could be read (a deleted or unreadable image gets none)."""
    done = set()
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        for image_id in dict.fromkeys(image_ids):
            try:
                img = open_rgb(images / image_id)
            except UserError:
                continue
            img.thumbnail((size, size))
            img.save(tmp / thumb_name(image_id), "JPEG", quality=80)
            done.add(image_id)
    return done


def _figure(rank: int, row: pd.Series, method: str, thumbs: str, have: set[str]) -> Figure:
    caption = [f"#{rank} {row['image_id']}", f"{method} {row[f'{method}_score']:.3f}", f"label: {row['label']}"]
    if method == "label_issues" and row.get("suggested_label"):
        caption.append(f"suggested: {row['suggested_label']}")
    src = f"{thumbs}/{thumb_name(row['image_id'])}" if row["image_id"] in have else ""
    return Figure(src, caption)


def gallery_html(scores: pd.DataFrame, methods: list[str], remove_by: list[str], thumbs: str, have: set[str]) -> str:
    """The page (:mod:`runtime.gallery`): one ranked grid per method with flags, ``remove_by`` methods first.

    Args:
        scores: ``scores.csv`` rows (``<method>_score``, ``<method>_flag``, ``suggested_label``).
        thumbs: the thumbnails' folder relative to the page; ``have``: the ids that have a thumbnail.
    """
    order = [*remove_by, *(m for m in methods if m not in remove_by)]
    sections = []
    for method in order:
        flagged = scores[scores[f"{method}_flag"]].sort_values(f"{method}_score", ascending=False, kind="stable")
        if flagged.empty:
            continue
        removes = "removed from the cleaned CSV" if method in remove_by else "kept (not in remove_by)"
        figures = [_figure(r, row, method, thumbs, have) for r, (_, row) in enumerate(flagged.iterrows(), 1)]
        sections.append(gallery.grid(f"{method}: {len(flagged)} flagged, {removes}", figures))
    return gallery.page("Flagged images, most suspect first", sections, thumb_px=THUMB_PX)
