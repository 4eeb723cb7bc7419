"""The command-line entry points: one module per command (``parse, call, print``), and the options they share.

``python -m pipelines.build_crops``, ``python -m pipelines.train_fine``, ``python -m pipelines.label`` (and the other
commands under their old paths) run these modules; ``detectcrop SUBCOMMAND`` is `pipelines.cli.console`.
"""

from __future__ import annotations

from pipelines.cli.options import (
    add_common_args,
    add_detection_args,
    decode_limits,
    detection_settings,
    fail,
    join_ray_cluster,
    probability,
    ray_options,
    setup_logging,
    whole_number,
)

__all__ = [
    "add_common_args",
    "add_detection_args",
    "decode_limits",
    "detection_settings",
    "fail",
    "join_ray_cluster",
    "probability",
    "ray_options",
    "setup_logging",
    "whole_number",
]
