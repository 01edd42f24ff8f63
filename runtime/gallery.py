"""The one HTML image gallery: headed grids of captioned thumbnails, grouped (e.g. by class).

Used by ``runtime.predict --visualize`` (images copied beside the page) and the dataset audit's flagged-image
page (thumbnails inlined as data: URIs, so the page is self-contained).
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Figure:
    """One image of a gallery: ``src`` (a relative URL or a data: URI) and its caption lines (plain text)."""

    src: str
    caption: Sequence[str]


def grid(heading: str, figures: Sequence[Figure], level: int = 2) -> str:
    """An ``<h{level}>`` heading and a wrapping grid of ``figures``."""
    items = "".join(
        f'<figure><img src="{html.escape(f.src, quote=True)}" loading="lazy" alt=""><figcaption>'
        + "<br>".join(html.escape(line) for line in f.caption)
        + "</figcaption></figure>"
        for f in figures
    )
    return f"<h{level}>{html.escape(heading)}</h{level}>\n<div class=g>{items}</div>"


def page(title: str, sections: Sequence[str], thumb_px: int = 160) -> str:
    """A complete HTML page: ``<h1>title</h1>`` then the sections (from :func:`grid` or :func:`heading`), with
    thumbnails shown at ``thumb_px`` pixels."""
    style = (
        "body{font-family:sans-serif;margin:1em}.g{display:flex;flex-wrap:wrap;gap:8px}"
        f"figure{{margin:0;width:{thumb_px}px;font-size:12px;word-break:break-all}}img{{width:{thumb_px}px;"
        f"height:{thumb_px}px;object-fit:contain;background:#eee}}"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title><style>{style}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "</body></html>\n"
    )


def heading(text: str, level: int = 2) -> str:
    """A section heading between grids."""
    return f"<h{level}>{html.escape(text)}</h{level}>"
