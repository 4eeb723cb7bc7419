"""The precision vocabulary of both stages on LiteRT.

``float``: float32 weights and activations. ``dynamic``: weights stored as int8 (dynamic-range quantisation: about
4x smaller, activations stay float). ``int8``: weights and activations int8, quantised on representative data
(photos for the detector, crops for the classifier) and checked against float on held-out data. ``auto``: int8
where representative data exists and the check holds, else float. "Calibration" in this project means temperature
scaling of the classifier's probabilities only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Precision = Literal["float", "dynamic", "int8", "auto"]
PRECISIONS: tuple[str, ...] = ("float", "dynamic", "int8", "auto")
#: What each stage offers (the detector's float graph gains nothing on XNNPACK from int8 weights alone).
DETECTOR_PRECISIONS: tuple[str, ...] = ("float", "int8", "auto")
CLASSIFIER_PRECISIONS: tuple[str, ...] = PRECISIONS
#: What a classifier export writes (``auto`` chooses among exports).
EXPORTED_PRECISIONS: tuple[str, ...] = ("float", "dynamic", "int8")


def check_precision(precision: str, offered: Sequence[str] = PRECISIONS, what: str = "") -> str:
    """``precision`` when ``offered`` holds it; else a `ValueError` naming what is offered."""
    if precision not in offered:
        of = f" for {what}" if what else ""
        raise ValueError(f"precision{of} must be one of {', '.join(offered)}, got {precision!r}")
    return precision
