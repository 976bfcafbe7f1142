"""Small HTML pieces for self-contained pages: escaped text, tables, images embedded as base64."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

THUMBNAIL_SIZE = 96  # pixels on the longer side of a top-loss image

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1150px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.plot { max-width: 100%; border: 1px solid #eee; } img.thumb { image-rendering: pixelated; }
.note { color: #8a5300; } .muted { color: #666; font-size: 0.9em; }
td.input { max-width: 560px; overflow-wrap: anywhere; }
"""


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, subtitle: str, sections: Iterable[str]) -> str:
    body = "\n".join(sections)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n<h1>{escape(title)}</h1>\n"
            f"<p class=\"muted\">{escape(subtitle)}</p>\n{body}\n</body></html>\n")


def section(title: str, *parts: str, anchor: str | None = None) -> str:
    ident = f" id=\"{escape(anchor)}\"" if anchor else ""
    return f"<section{ident}><h2>{escape(title)}</h2>\n" + "\n".join(p for p in parts if p) + "</section>"


def paragraph(text: str, css: str | None = None) -> str:
    attribute = f' class="{escape(css)}"' if css else ""
    return f"<p{attribute}>{escape(text)}</p>"


def number(value: object, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return escape("" if value is None else value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]], ident: str | None = None,
          raw_columns: Sequence[int] = ()) -> str:
    """Cells are escaped (numbers formatted and right-aligned) except the `raw_columns`, which hold HTML."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = []
        for index, value in enumerate(row):
            if index in raw_columns:
                cells.append(f"<td class=\"input\">{value}</td>")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f"<td class=\"num\">{number(value)}</td>")
            else:
                cells.append(f"<td>{escape('' if value is None else value)}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    ident_attr = f" id=\"{escape(ident)}\"" if ident else ""
    return f"<table{ident_attr}><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def image(png: bytes, alt: str, css: str = "plot") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img class=\"{css}\" alt=\"{escape(alt)}\" src=\"data:image/png;base64,{data}\">"


def thumbnail(path: str | Path) -> str | None:
    """A small embedded copy of the image at `path`, or None when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as source:
            copy = source.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    copy.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    if max(copy.size) < THUMBNAIL_SIZE // 2:  # tiny images (e.g. 28 px) upscale for visibility
        factor = THUMBNAIL_SIZE // max(copy.size)
        copy = copy.resize((copy.width * factor, copy.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    copy.save(buffer, format="PNG")
    return image(buffer.getvalue(), Path(path).name, css="thumb")
