"""One colour per method, the same in every figure of every report: the method's label hashed into a large
qualitative palette, so adding or dropping a method never repaints the others (a running index would)."""

from __future__ import annotations

import hashlib

from matplotlib import colormaps
from matplotlib.colors import to_hex


def _palette() -> tuple[str, ...]:
    """matplotlib's three 20-colour qualitative maps less their greys (grey draws the context lines): 54
    colours, in pairs of two shades of one hue."""
    tab20, tab20b, tab20c = (
        [to_hex(c) for c in colormaps[name].colors] for name in ("tab20", "tab20b", "tab20c")
    )
    return tuple(tab20[:14] + tab20[16:] + tab20b + tab20c[:16])


PALETTE = _palette()

# Prefixed to every label before hashing: with it the 18 methods of conf/method land on 18 different pairs
# of the palette (found by trying prefixes in turn; tests/test_figures.py guards it). Other labels, such as
# a rank sweep's "lora r=4", may share a colour; the figures name every method in text too.
SALT = "3281:"


def method_color(label: str) -> str:
    """The colour of a method label (``lora r=4``), by a digest of its text: Python's ``hash`` of a string
    changes from one process to the next, a SHA-1 does not."""
    digest = hashlib.sha1(f"{SALT}{label}".encode()).digest()
    return PALETTE[int.from_bytes(digest[:4], "big") % len(PALETTE)]
