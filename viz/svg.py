"""The little SVG both pictures need: escaping, numbers as the pictures print them, colours.

Every element that carries meaning has a class (`value`, `grad`, `msg forward`, `drop`, ...), so
tests and stylesheets find numbers and colours by class, never by pixels.
"""

from __future__ import annotations

import math
import re
import textwrap
from xml.sax.saxutils import escape, quoteattr

from orchestrator.errors import InputError

GREEN = "#1a7f37"
"""Forward values (CS231n draws them green, above the wire)."""
RED = "#c62828"
"""Gradients (red, below the wire)."""
GREY = "#6b7280"
DUPLICATE = "#7b1fa2"
ERROR = "#e65100"
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
CAPTION_CHAR = 7.0
"""Pixels a caption's character takes (13 px text), as the pictures reckon a caption's width."""
CAPTION_LINE = 17.0
"""Pixels from one line of a caption to the next."""
CAPTION_CHARS = 60
"""A caption's line holds at least this many characters, however narrow the picture."""


class DrawError(InputError):
    """A picture that cannot be made from what it was given; the message says why and what to do."""


def num(value: float | None) -> str:
    """A number as the CS231n figures print it: two decimals (-2.00, 0.73), two significant digits
    below 0.1 (-0.0066); '' for none."""
    if value is None:
        return ""
    if value == 0:
        return "0.00"
    if math.isfinite(value) and 0.1 <= abs(value) < 100_000:
        return f"{value:.2f}"
    return f"{value:.2g}" if abs(value) >= 1e-4 else f"{value:.1e}"


def short(value: float | None) -> str:
    """A number as typed: -2 rather than -2.00, 0.5 rather than 0.50; '' for none."""
    return f"{value:g}" if value is not None else ""


def text(
    x: float, y: float, content: str, css: str, *, anchor: str = "middle", title: str = "", centred: bool = False
) -> str:
    """A <text> at (x, y): its baseline there, or with `centred` its middle."""
    hover = f"<title>{escape(title)}</title>" if title else ""
    shift = ' dy="0.35em"' if centred else ""
    return (
        f'<text class={quoteattr(css)} x="{x:.1f}" y="{y:.1f}"{shift} text-anchor="{anchor}">'
        f"{hover}{escape(content)}</text>"
    )


def captioned(caption: str, x: float, width: float, body: list[str]) -> tuple[float, float, list[str]]:
    """A picture's caption at its top left, cut into lines as wide as the picture (a long caption
    made the picture as wide as itself: 1,770 px for a 420 px circuit), and `body` moved down
    below the lines past the first. Returns (the width the lines need, the height they add, the
    elements)."""
    chars = max(CAPTION_CHARS, int((width - 2 * x) / CAPTION_CHAR))
    lines = _lines(caption, chars) or [""]
    heads = [text(x, 24 + CAPTION_LINE * i, line, "caption", anchor="start") for i, line in enumerate(lines)]
    added = CAPTION_LINE * (len(lines) - 1)
    moved = [f'<g transform="translate(0 {added:g})">', *body, "</g>"] if added else body
    return 2 * x + CAPTION_CHAR * max(len(line) for line in lines), added, [*heads, *moved]


def _lines(caption: str, chars: int) -> list[str]:
    """`caption` in lines of at most `chars` characters, cut after a clause ("; ") where one
    fits, else between words."""
    lines: list[str] = []
    for clause in caption.split("; "):
        if lines and len(lines[-1]) + 2 + len(clause) <= chars:
            lines[-1] += "; " + clause
            continue
        if lines:
            lines[-1] += ";"
        lines += textwrap.wrap(clause, chars, break_long_words=False, break_on_hyphens=False)
    return lines


def document(width: float, height: float, style: str, body: list[str], title: str, kind: str) -> str:
    """A standalone SVG document (no scripts, no external resources), its root of class `kind`
    and its style sheet's rules for that root only: a page that shows two pictures inline (the
    web page) keeps each one's `.value` or `.lost` to itself, and to the rest of the page."""
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" class={attr(kind)} width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT}">\n'
        f"<title>{escape(title)}</title>\n<style>{scoped(style, kind)}</style>\n"
        f'<rect class="background" x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="white"/>\n'
    )
    return head + "\n".join(body) + "\n</svg>\n"


def scoped(style: str, kind: str) -> str:
    """Every rule of `style` (one `selectors { declarations }` a line) for `svg.kind` only."""

    def rule(found: re.Match[str]) -> str:
        selectors = ", ".join(f"svg.{kind} {selector.strip()}" for selector in found[1].split(","))
        return f"{selectors} {{{found[2]}}}"

    return re.sub(r"([^{}\n]+)\{([^{}]*)\}", rule, style)


def attr(value: str) -> str:
    return quoteattr(value)
