"""int8 detectors on LiteRT: representative photos, the quantised conversion, and the recall rule for ``auto``.

A folder of representative photos holds photos (any layout; ``heldout/`` excluded) that set the activation ranges, and a
``heldout/`` subfolder whose photos measure int8 against float. ``heldout/boxes.json`` (``{"name.jpg": [[x1, y1, x2,
y2], ...]}``, pixels) gives their ground truth; without it the float model's own detections are the reference. A
folder without ``heldout/`` uses every other photo (sorted by name) as held out.

Only the convolutional trunk is quantised (every op that feeds a convolution, and the convolutions): everything
downstream of the last convolutions (score decoding, top-k, box arithmetic, NMS) stays float, because one int8 scale
shared by boxes in pixels, scores in [0, 1] and class ids cannot represent all three. The trunk's highest-resolution
ops (the stem) stay float too, the graph is prepared first (`detectcrop.runtime.prequant`: ReLUs XNNPACK can run
in int8, cross-layer equalisation, percentile activation ranges), and the int8 convolutions' biases are corrected
after it (`detectcrop.runtime.bias`).

``precision="auto"`` serves int8 only where held-out detection recall (IoU >= `CHECK_IOU`, scores >=
`CHECK_MIN_SCORE`) is within `INT8_MAX_RECALL_DROP` of the float model's at the same threshold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop import boxes
from detectcrop.detections import Detections

logger = logging.getLogger(__name__)

#: int8 may be the default when its held-out recall is at most this much below float's.
INT8_MAX_RECALL_DROP = 0.01
#: Score threshold and IoU at which held-out recall is measured.
CHECK_MIN_SCORE = 0.3
CHECK_IOU = 0.5
#: Calibration photos are shrunk to this longer side (detectors resize to 512-1024 pixels themselves).
REPRESENTATIVE_SIDE = 640
#: Ops that never belong to a convolutional trunk: kept float even when a convolution's input depends on them.
FLOAT_OPS = ("TOPK_V2", "GATHER", "GATHER_ND", "PACK", "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5")
HELDOUT_DIR = "heldout"
BOXES_FILE = "boxes.json"
_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class RepresentativeData:
    """Calibration photos and held-out photos (with ground truth, or ``None``: the float model's detections).

    Arrays are RGB uint8 ``(H, W, 3)``; ``check_boxes[i]`` is ``(K, 4)`` ``x1, y1, x2, y2`` in pixels.
    """

    images: tuple[np.ndarray, ...]
    check_images: tuple[np.ndarray, ...] = ()
    check_boxes: tuple[np.ndarray, ...] | None = None

    def digest(self) -> str:
        """sha256 of the pixels and boxes: part of the cached int8 flatbuffer's key."""
        h = hashlib.sha256()
        for group in (self.images, self.check_images, self.check_boxes or ()):
            h.update(f"|{len(group)}|".encode())
            for a in group:
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype}{a.shape}".encode())
                h.update(a.tobytes())
        return h.hexdigest()

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> RepresentativeData:
        """Read a folder of representative photos (see the module docstring)."""
        from detectcrop.io.images import read_image

        root = Path(folder)
        heldout_dir = root / HELDOUT_DIR
        photos = sorted(p for p in root.rglob("*") if p.suffix.lower() in _SUFFIXES and heldout_dir not in p.parents)
        if heldout_dir.is_dir():
            held = sorted(p for p in heldout_dir.iterdir() if p.suffix.lower() in _SUFFIXES)
        else:
            photos, held = photos[0::2], photos[1::2]
        if not photos:
            raise FileNotFoundError(f"no representative photos in {root}")
        truth = None
        if (heldout_dir / BOXES_FILE).is_file():
            table = json.loads((heldout_dir / BOXES_FILE).read_text())
            truth = tuple(np.asarray(table.get(p.name, []), np.float64).reshape(-1, 4) for p in held)
        images = tuple(_shrink(read_image(p)) for p in photos)
        return cls(images, tuple(read_image(p) for p in held), truth)


def _shrink(image: np.ndarray, side: int = REPRESENTATIVE_SIDE) -> np.ndarray:
    import cv2

    scale = side / max(image.shape[:2])
    if scale >= 1:
        return np.ascontiguousarray(image)
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def trunk_float_nodes(float_flatbuffer: bytes) -> list[str]:
    """Output tensor names of the ops outside the convolutional trunk (kept float by the int8 conversion)."""
    from detectcrop.runtime.interpreters import bare_interpreter

    interp = bare_interpreter(float_flatbuffer)  # details only: no XNNPACK weight packing
    ops = interp._get_ops_details()  # the package's only op-level view of a graph
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    producer = {int(t): op for op in ops for t in op["outputs"]}
    trunk: set[int] = set()
    stack = [op for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    while stack:
        op = stack.pop()
        if op["index"] in trunk:
            continue
        trunk.add(op["index"])
        stack.extend(producer[int(t)] for t in op["inputs"] if int(t) in producer)
    return sorted({names[int(t)] for op in ops if op["index"] not in trunk for t in op["outputs"]})


def convert_int8(converter: Any, prepare: Callable[[np.ndarray], np.ndarray],
                 representative: RepresentativeData) -> tuple[bytes, dict[str, int]]:
    """``(flatbuffer, counts)``: an int8 flatbuffer from a detector's ``converter``
    (`detectcrop.runtime.convert.detector_converter`): the trunk int8 but for its stem, its ranges measured on
    ``prepare(image[None])`` of each representative image, post-processing float; the same inputs as the float model,
    float outputs. ``counts``: ``bias_corrected``, the int8 convolutions whose bias `detectcrop.runtime.bias` moved.

    The converter's own float graph (hard-swish as three element-wise ops, which XNNPACK runs in int8, unlike int8
    ``HARD_SWISH``) is prepared by `detectcrop.runtime.prequant` (ReLUs as depthwise convolutions, cross-layer
    equalisation), its ranges measured (TensorFlow's calibrator), given percentile activation ranges and quantised, its
    stem kept float (`stem_nodes`); last, each int8 convolution's bias is corrected by its mean error against the float
    graph (`detectcrop.runtime.bias`).
    """
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python.optimize import calibrator

    from detectcrop.runtime import bias as litert_bias
    from detectcrop.runtime import prequant as litert_prequant

    inputs = [np.ascontiguousarray(prepare(image[None])) for image in representative.images]
    raw = converter.convert()
    float_nodes = trunk_float_nodes(raw)  # names survive the rewrites below
    flatbuffer, _ = litert_prequant.relu_as_depthwise(raw, keep=set(float_nodes).__contains__)
    flatbuffer, _ = litert_prequant.equalize(flatbuffer, inputs)
    calibrated = calibrator.Calibrator(flatbuffer).calibrate(lambda: ([x] for x in inputs))
    boundary = _boundary(flatbuffer, set(float_nodes))
    calibrated, _ = litert_prequant.percentile_ranges(calibrated, inputs, keep=boundary.__contains__)
    quantized = tf_convert.mlir_quantize(calibrated, fully_quantize=False, denylisted_ops=list(FLOAT_OPS),
                                         denylisted_nodes=float_nodes + stem_nodes(flatbuffer))
    check_requantization(quantized)
    corrected, count = litert_bias.correct_biases(quantized, flatbuffer, inputs)
    return corrected, {"bias_corrected": count}


def stem_nodes(float_flatbuffer: bytes) -> list[str]:
    """Output names of the ops at the first convolution's resolution (the stem: that convolution and, in a
    MobileNet, the first block), which int8 keeps float. There the activations of the offline CenterNet lost
    the most to one int8 scale per tensor (its first depthwise output: 23% relative error after equalisation), and
    those few ops are a small share of the time (held-out recall 0.926 -> 0.956 for 1.62x -> 1.60x float's speed)."""
    from detectcrop.runtime.interpreters import bare_interpreter

    interp = bare_interpreter(float_flatbuffer)  # details only: no XNNPACK weight packing
    shapes = {t["index"]: t["shape"] for t in interp.get_tensor_details()}
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    ops = [op for op in interp._get_ops_details() if op["op_name"] not in FLOAT_OPS and len(op["outputs"])
           and len(shapes[int(op["outputs"][0])]) == 4]
    first = next((op for op in ops if op["op_name"] == "CONV_2D"), None)
    if first is None:
        return []
    size = tuple(shapes[int(first["outputs"][0])][1:3])  # the first convolution's resolution
    return [names[int(op["outputs"][0])] for op in ops if tuple(shapes[int(op["outputs"][0])][1:3]) == size]


def _boundary(float_flatbuffer: bytes, float_nodes: set[str]) -> set[str]:
    """Names of the tensors the float post-processing reads from the trunk (their ranges are kept whole)."""
    from detectcrop.runtime.interpreters import bare_interpreter

    interp = bare_interpreter(float_flatbuffer)  # details only: no XNNPACK weight packing
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    read = {names[int(t)] for op in interp._get_ops_details()
            if any(names[int(o)] in float_nodes for o in op["outputs"]) for t in op["inputs"] if int(t) in names}
    return read | {d["name"] for d in interp.get_output_details()}


def check_requantization(flatbuffer: bytes, low: float = 2.0 ** -32, high: float = 256.0) -> None:
    """Raise ``ValueError`` when an int8 convolution's requantization scale (input x weight / output scale) lies
    outside ``[low, high)``: XNNPACK cannot run it (flat representative images produce such scales)."""
    from detectcrop.runtime.interpreters import bare_interpreter

    interp = bare_interpreter(flatbuffer)  # no XNNPACK: it must not see the model before the check
    scales = {t["index"]: t["quantization_parameters"]["scales"] for t in interp.get_tensor_details()}
    for op in interp._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        x, w, y = (scales[int(op["inputs"][0])], scales[int(op["inputs"][1])], scales[int(op["outputs"][0])])
        if not (x.size and w.size and y.size):
            continue
        ratio = x.max() * w / y.max()
        if not (np.all(np.isfinite(ratio)) and ratio.min() >= low and ratio.max() < high):
            raise ValueError(f"int8 {op['op_name']} #{op['index']} has requantization scales {ratio.min():.3g}.."
                             f"{ratio.max():.3g} outside [{low:.3g}, {high:g}): use varied real photos as "
                             "representative data")


def detection_recall(detect: Callable[[np.ndarray], Detections], images: tuple[np.ndarray, ...],
                     truth: tuple[np.ndarray, ...], min_score: float = CHECK_MIN_SCORE,
                     iou: float = CHECK_IOU) -> float:
    """Fraction of ``truth`` boxes matched (IoU >= ``iou``, any class) by a detection scoring >= ``min_score``."""
    found = total = 0
    for image, gt in zip(images, truth, strict=True):
        total += len(gt)
        dets = detect(image).by_score(min_score)
        if len(gt) and len(dets):
            found += int((boxes.iou(gt, dets.xyxy).max(axis=1) >= iou).sum())
    return found / total if total else float("nan")


def int8_detector_check(float_recall: float, int8_recall: float,
                        max_drop: float = INT8_MAX_RECALL_DROP) -> dict[str, Any]:
    """Whether int8 may be the default: its recall at most ``max_drop`` below float's at the same threshold."""
    ok = bool(np.isfinite(float_recall) and np.isfinite(int8_recall) and int8_recall >= float_recall - max_drop)
    return {"float_recall": float(float_recall), "int8_recall": float(int8_recall), "max_recall_drop": max_drop,
            "int8_default": ok}


def measure(float_detect: Callable[[np.ndarray], Detections], int8_detect: Callable[[np.ndarray], Detections],
            representative: RepresentativeData) -> dict[str, Any]:
    """Held-out recall of both models (reference: the ground truth, else float's own detections) and the rule."""
    truth = representative.check_boxes
    reference = "ground truth"
    if truth is None:
        reference = "float detections"
        truth = tuple(float_detect(im).by_score(CHECK_MIN_SCORE).xyxy for im in representative.check_images)
    check = int8_detector_check(detection_recall(float_detect, representative.check_images, truth),
                                detection_recall(int8_detect, representative.check_images, truth))
    n = int(sum(len(t) for t in truth))
    return {**check, "reference": reference, "n_images": len(representative.check_images), "n_boxes": n,
            "min_score": CHECK_MIN_SCORE, "iou": CHECK_IOU}
