"""``outputs/eval/report.html``: the evaluation as one self-contained page to share.

Everything is inline (PNG images as ``data:`` URIs, the style sheet in the page), so the file can
be mailed or attached as it is. The tables are those of ``report.md`` (the same markdown, turned
into HTML here, so the two never disagree): the per-stage table with the mean-pose baseline and the
per-action tables. Then the plots (MPJPE per stage, training curves over the curriculum) and the
gallery of the best and the worst test frames of the final stage (``workflows.gallery``).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #eee; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
"""


def png_data_uri(image: np.ndarray | bytes | Path) -> str:
    """A ``data:image/png;base64,...`` URI of an RGB (H, W, 3) uint8 array, PNG bytes or a PNG file."""
    if isinstance(image, Path):
        data = image.read_bytes()
    elif isinstance(image, bytes):
        data = image
    else:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError("image: PNG encoding failed")
        data = buf.tobytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _inline(text: str) -> str:
    """Escape, then markdown ``**bold**`` and ``*italic*``."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"\*(.+?)\*", r"<i>\1</i>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(md: str) -> str:
    """The subset of markdown that ``report.md`` uses: ``#`` headings, paragraphs, pipe tables."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            flush()
            header = _cells(line)
            i += 2  # the header and the |---| line
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            th = "".join(f"<th>{_inline(c)}</th>" for c in header)
            body = "".join(
                "<tr>" + "".join(
                    f"<td class=\"num\">{_inline(c)}</td>" if re.fullmatch(r"[-+]?[\d.,]+|–", c) else f"<td>{_inline(c)}</td>"
                    for c in r) + "</tr>"
                for r in rows)
            out.append(f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>")
            continue
        m = re.match(r"(#{1,6}) (.*)", line)
        if m:
            flush()
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif line.strip():
            para.append(line.strip())
        else:
            flush()
        i += 1
    flush()
    return "\n".join(out)


def render(markdown: str, plots: Sequence[tuple[str, Path]], gallery: Sequence, stage: str,
           title: str = "c2f-pose evaluation") -> str:
    """The whole page.

    Args:
        markdown: ``report.md``'s text.
        plots: (caption, PNG file) pairs, shown in order.
        gallery: ``workflows.gallery.GalleryFrame`` items (best ones first, then the worst).
        stage: the stage the gallery shows.
    """
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body>", markdown_to_html(markdown), "<h2>Plots</h2>"]
    for caption, path in plots:
        parts.append(f"<figure class=\"plot\"><img alt=\"{html.escape(caption)}\" src=\"{png_data_uri(Path(path))}\">"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    for kind, heading in (("best", "Best test frames"), ("worst", "Worst test frames")):
        frames = [f for f in gallery if f.kind == kind]
        if not frames:
            continue
        parts.append(f"<h2>{heading}, {html.escape(stage)}</h2><p>Input crop with the ground truth (white) and "
                     "the prediction (left blue, right red); the 3D skeletons from 0° and 90° (ground truth grey); "
                     "MPJPE argmax, ground-truth root depth.</p>")
        for f in frames:
            cap = f"test frame {f.index}, {f.action}: {f.error_mm:.1f} mm"
            parts.append(f"<figure class=\"gallery {kind}\"><img alt=\"{html.escape(cap)}\" "
                         f"src=\"{png_data_uri(f.picture)}\"><figcaption>{html.escape(cap)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
