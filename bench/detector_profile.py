"""Where the offline detector's time goes on LiteRT (XNNPACK): sub-graphs timed side by side against references.

    python -m bench.detector_profile [--rounds 9] [--threads 1]

The CenterNet SavedModel is frozen and pruned at named tensors into cumulative sub-graphs (input resize; + the
MobileNetV3 backbone; + the CenterNet head's upsampling path and output convolutions; + decoding: the whole model),
each converted to LiteRT with the same fixed 640x480 uint8 input. A stage's time is the difference between
consecutive sub-graphs. References: a large 3x3 convolution, a 1x1 convolution and a 3x3 depthwise convolution of
the head's size, under XNNPACK with the same threads. All runs alternate in one process, so the machine's load hits
them alike; medians are reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np

from bench.litert_benchmark import _model_flops
from detectcrop import zoo
from detectcrop.runtime import make_interpreter

_P = "PartitionedCall/PartitionedCall/tower_0/"
#: Cumulative sub-graphs of centernet_mobilenetv3_512: name -> fetched tensors (``None``: the model's outputs).
STAGES: dict[str, list[str] | None] = {
    "resize to 512x512": ["PartitionedCall/resize/ResizeBilinear:0"],
    "+ backbone (MobileNetV3)": [_P + "MobilenetV3/expanded_conv_14/add:0"],
    "+ head (upsampling path, outputs)": [_P + "CenternetHead/centernet_cls_output/BiasAdd:0",
                                          _P + "CenternetHead/centernet_wh_output/BiasAdd:0"],
    "+ decoding (whole model)": None,
}
SHAPE = (480, 640)


def stage_flatbuffers(saved_model: str, batch: int = 1, stages: Sequence[str] = tuple(STAGES)) -> dict[str, bytes]:
    """LiteRT flatbuffers of the cumulative sub-graphs, input uint8 ``[batch, 480, 640, 3]`` (the decoding stage
    takes batch 1 only: the TF.js graph gathers from a batch of one)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(tf.saved_model.load(saved_model).signatures["serving_default"])
    graph_def = frozen.graph.as_graph_def()
    (node,) = [n for n in graph_def.node if n.op == "Placeholder"]
    node.attr["shape"].shape.dim[0].size = -1  # the signature says batch 1; the trunk itself takes any batch
    placeholder = node.name
    wrapped = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
    out = {}
    for name in stages:
        fetches = STAGES[name] or [t.name for t in frozen.outputs]
        pruned = wrapped.prune(feeds=[wrapped.graph.get_tensor_by_name(f"{placeholder}:0")],
                               fetches=[wrapped.graph.get_tensor_by_name(f) for f in fetches])
        fn = tf.function(lambda x, pruned=pruned: pruned(x),
                         input_signature=[tf.TensorSpec([batch, *SHAPE, 3], tf.uint8)])
        out[name] = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], pruned).convert()
    return out


def _reference(shape: tuple[int, int, int], kernel: int, depthwise: bool, threads: int) -> tuple[Callable, float]:
    import tensorflow as tf

    h, w, c = shape
    layer = (tf.keras.layers.DepthwiseConv2D(kernel, padding="same") if depthwise
             else tf.keras.layers.Conv2D(c, kernel, padding="same"))
    fn = tf.function(lambda x: layer(x), input_signature=[tf.TensorSpec([1, *shape], tf.float32)])
    interp = make_interpreter(tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()],
                                                                               layer).convert(), threads)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.random.default_rng(0).random((1, *shape), np.float32))
    return interp.invoke, 2.0 * h * w * c * kernel * kernel * (1 if depthwise else c)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import tempfile

    runs: dict[str, Callable] = {}
    flops: dict[str, float] = {}
    image = np.random.default_rng(0).integers(0, 256, (1, *SHAPE, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        saved_model = str(zoo.ensure(zoo.OFFLINE_DETECTOR) / "saved_model")
        for name, flat in stage_flatbuffers(saved_model).items():
            path = os.path.join(tmp, "stage.tflite")
            with open(path, "wb") as f:
                f.write(flat)
            flops[name] = _model_flops(path, SHAPE)
            interp = make_interpreter(flat, args.threads)
            interp.allocate_tensors()
            interp.set_tensor(interp.get_input_details()[0]["index"], image)
            runs[name] = interp.invoke
        # tile batching: the trunk (everything the decoding reads) on 6 images in one invoke vs 6 invokes
        trunk = list(STAGES)[2]
        batched = make_interpreter(stage_flatbuffers(saved_model, 6, [trunk])[trunk], args.threads)
        batched.allocate_tensors()
        batched.set_tensor(batched.get_input_details()[0]["index"], np.repeat(image, 6, axis=0))
        runs["trunk, batch of 6 (one invoke)"] = batched.invoke
        flops["trunk, batch of 6 (one invoke)"] = 6 * flops[trunk]
    refs = {"reference: 3x3 conv 56x56x128->128": ((56, 56, 128), 3, False),
            "reference: 1x1 conv 128x128x96->96": ((128, 128, 96), 1, False),
            "reference: 3x3 depthwise 128x128x96": ((128, 128, 96), 3, True)}
    for name, (shape, kernel, depthwise) in refs.items():
        runs[name], flops[name] = _reference(shape, kernel, depthwise, args.threads)
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.threads} thread(s); date "
          f"{time.strftime('%Y-%m-%d')}; load average {os.getloadavg()[0]:.1f}")
    print(f"command: python -m bench.detector_profile --rounds {args.rounds} --threads {args.threads}\n")
    print("| part | cumulative ms | part ms | part GFLOP | part GFLOP/s |\n|---|---|---|---|---|")
    prev_t = prev_f = 0.0
    for name in STAGES:
        dt, df = med[name] - prev_t, flops[name] - prev_f
        rate = f"{df / dt / 1e9:.1f}" if df > 0 and dt > 0 else "-"
        print(f"| {name} | {1e3 * med[name]:.1f} | {1e3 * dt:.1f} | {df / 1e9:.3f} | {rate} |")
        prev_t, prev_f = med[name], flops[name]
    trunk = list(STAGES)[2]
    ratio = np.median(6 * np.asarray(times[trunk]) / np.asarray(times["trunk, batch of 6 (one invoke)"]))
    print(f"| trunk, batch of 6 in one invoke | {1e3 * med['trunk, batch of 6 (one invoke)']:.1f} | (6 single "
          f"invokes: {6e3 * med[trunk]:.1f}; batching gains {ratio:.2f}x) | | |")
    for name in refs:
        print(f"| {name} | {1e3 * med[name]:.1f} | | {flops[name] / 1e9:.3f} | {flops[name] / med[name] / 1e9:.1f} |")


if __name__ == "__main__":
    main()
