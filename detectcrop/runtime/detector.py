"""A converted detector on the LiteRT interpreter, with the TF Hub detector contract (`LiteRTDetector`)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop.runtime import fixed as litert_fixed
from detectcrop.runtime.interpreters import bare_interpreter, default_threads, make_interpreter
from detectcrop.zoo import centernet_head

#: Interpreters kept per thread, one per input shape: resizing an interpreter's input re-plans the XNNPACK graph
#: (weights are repacked), which costs more than the inference, and tiles and whole images alternate two shapes.
MAX_SHAPES = 4


class LiteRTDetector:
    """A ``.tflite`` detector with the TF Hub contract as a callable ``uint8 [1, H, W, 3] -> dict of arrays``.

    A static-shape graph (float ``[1, S, S, 3]`` input) gets the image resized outside (`detectcrop.runtime.fixed`).
    A cached model with a trunk and head beside it (`convert_trunk`; ``split=False`` ignores them) answers a call
    for a few categories (at most `centernet_head.MAX_SPLIT_CHANNELS`) with the trunk and decodes only those
    classes in NumPy (`decodes_categories`); every other call runs the whole graph.

    One interpreter per calling thread (interpreters are not thread-safe), per graph and per input shape (the
    `MAX_SHAPES` most recently used), so an image size seen before never re-plans the graph.
    """

    def __init__(self, model: str | os.PathLike | bytes, num_threads: int | None = None, *, split: bool = True) -> None:
        self.model = model
        self.num_threads = num_threads
        self.head = centernet_head.CenterNetHead.beside(model) if split else None
        self.trunk = Path(model).with_name(centernet_head.TRUNK_FILE) if self.head is not None else None
        self._local = threading.local()
        details = bare_interpreter(model).get_input_details()[0]
        signature = tuple(int(v) for v in details["shape_signature"])
        #: ``(S, S)`` for a static-shape graph fed resized float images (`detectcrop.runtime.fixed`), else ``None``.
        self.fixed_size = signature[1:3] if details["dtype"] == np.float32 and min(signature) > 0 else None

    @property
    def decodes_categories(self) -> bool:
        """Whether a call restricted to some COCO categories (``categories=``) decodes only those."""
        return self.head is not None

    @property
    def concurrent_calls(self) -> int:
        """How many single-threaded calls `detectcrop.tiling` may run at once: one per thread this model would use."""
        return int(self.num_threads or default_threads())

    def _state(self, graph: Any, shape: tuple[int, ...], num_threads: int | None) -> dict[str, Any]:
        states: OrderedDict[tuple[Any, ...], dict[str, Any]] | None = getattr(self._local, "states", None)
        if states is None:
            states = self._local.states = OrderedDict()
        key = (os.fspath(graph) if isinstance(graph, str | os.PathLike) else id(graph), num_threads or 0, *shape)
        state = states.get(key)
        if state is None:
            interp = make_interpreter(graph, num_threads or self.num_threads)
            keys = list(interp.get_signature_list())  # one signature: serving_default, or a concrete function's
            runner = interp.get_signature_runner("serving_default" if "serving_default" in keys else keys[0])
            (details,) = runner.get_input_details().values()
            outputs = {k: d["index"] for k, d in runner.get_output_details().items()}
            del runner  # it holds views of the interpreter's tensors, which forbid resizing
            interp.resize_tensor_input(details["index"], list(shape))
            interp.allocate_tensors()
            state = states[key] = {"interp": interp, "input": details["index"], "outputs": outputs}
            while len(states) > MAX_SHAPES:
                states.popitem(last=False)
        states.move_to_end(key)
        return state

    def __call__(self, images: np.ndarray, num_threads: int | None = None,
                 categories: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Run the model; ``num_threads`` overrides the interpreter threads for this call (`detectcrop.tiling` runs
        tiles as concurrent single-threaded calls, which XNNPACK completes faster than one two-threaded call each);
        ``categories`` (COCO ids): with a trunk and head, only those classes are decoded, else the whole graph runs
        and every class comes back."""
        channels = None
        if categories is not None and self.head is not None:
            channels = self.head.channels(categories)
            if len(channels) > centernet_head.MAX_SPLIT_CHANNELS:
                channels = None
        if self.fixed_size is not None:
            images = litert_fixed.resize_like_tf(images, self.fixed_size)
        state = self._state(self.model if channels is None else self.trunk, tuple(images.shape), num_threads)
        interp = state["interp"]
        interp.set_tensor(state["input"], np.ascontiguousarray(images))
        interp.invoke()
        if channels is None:
            return {k: np.array(interp.get_tensor(i)) for k, i in state["outputs"].items()}
        # the trunk's outputs read in place (no copy of the 8 MB feature map), decoded before this thread's next call
        index = state["outputs"]
        return self.head.decode(interp.tensor(index["features"])(), interp.tensor(index["wh"])(), categories)
