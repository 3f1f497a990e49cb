"""Self-contained HTML pages: inline CSS and JavaScript, images as ``data:`` URIs, nothing fetched.

A page written here opens from a file on an offline machine (``file://``), and the one file
can be mailed or archived with everything it shows.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from matplotlib.figure import Figure

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 75em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
img { max-width: 100%; } pre { font-size: 0.8em; overflow-x: auto; background: #f6f6f6; padding: 0.6em; }
table.numbers { border-collapse: collapse; } table.numbers td { border: 1px solid #ddd; padding: 0.2em 0.6em; }
"""


def figure_png(figure: Figure, dpi: int = 80) -> bytes:
    """A Matplotlib figure as PNG bytes (Agg canvas, no display)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def data_uri(png: bytes | Figure | Path) -> str:
    """``data:image/png;base64,...`` of PNG bytes, a figure or a PNG file."""
    if isinstance(png, Figure):
        png = figure_png(png)
    elif isinstance(png, Path):
        png = png.read_bytes()
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_tag(png: bytes | Figure | Path, alt: str) -> str:
    """An ``<img>`` holding the picture itself."""
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt)}">'


def html_page(title: str, body: str, *, style: str = "", script: str = "") -> str:
    """A whole HTML5 document: ``body`` (HTML) under an ``<h1>`` of ``title``, the shared style plus
    ``style``, and ``script`` run at the end of the body."""
    script_tag = f"<script>\n{script}\n</script>" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}{style}</style>\n</head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n{script_tag}\n</body>\n</html>\n"
    )
