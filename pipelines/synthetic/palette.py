"""Named colours (RGB) of dials, case metals, bezel inserts and straps; the strap kinds."""

from __future__ import annotations

RGB = tuple[int, int, int]

#: Dial colours, shared across brands: every brand offers two light and two dark ones, every colour is offered by
#: several brands.
LIGHT_DIALS: dict[str, RGB] = {
    "white": (236, 235, 228), "silver": (186, 189, 194), "cream": (230, 218, 186), "champagne": (214, 196, 150),
}  # fmt: skip
DARK_DIALS: dict[str, RGB] = {"black": (24, 24, 27), "navy": (26, 42, 94), "green": (30, 82, 56), "blue": (44, 92, 168)}
DIAL_COLOURS: dict[str, RGB] = LIGHT_DIALS | DARK_DIALS
METALS: dict[str, RGB] = {
    "steel": (196, 199, 204), "gold": (212, 175, 92), "rose": (205, 148, 120), "dark": (60, 62, 66),
}  # fmt: skip
INSERT_COLOURS: dict[str, RGB] = {
    "black": (28, 28, 30), "blue": (30, 52, 130), "green": (24, 90, 50), "red": (150, 30, 34),
}  # fmt: skip
STRAP_COLOURS: dict[str, RGB] = {
    "black": (30, 28, 28), "brown": (96, 60, 36), "tan": (160, 112, 70), "navy": (34, 40, 70), "olive": (80, 86, 52),
}  # fmt: skip
STRAP_KINDS: tuple[str, ...] = ("leather", "bracelet", "rubber")
