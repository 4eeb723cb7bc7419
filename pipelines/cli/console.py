"""The ``detectcrop`` console command: one subcommand per entry point module.

    detectcrop crops --input PHOTOS --output CROPS ...     # = python -m pipelines.build_crops ...
    detectcrop train --data CROPS --output RUN ...         # = python -m pipelines.train_fine ...
    detectcrop SUBCOMMAND --help

Each subcommand is a module exposing ``get_args_parser()`` and ``main(argv) -> int`` (the ``python -m`` forms keep
working). Adding one is one row of `COMMANDS`. Modules are imported only when their subcommand runs, so
``detectcrop --help`` and ``detectcrop SUBCOMMAND --help`` never import TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Command:
    module: str
    help: str

    @property
    def entry(self) -> str:
        """The documented ``python -m`` path (``pipelines.build_crops`` runs `pipelines.cli.build_crops`)."""
        return self.module.replace("pipelines.cli.", "pipelines.", 1)


COMMANDS: dict[str, Command] = {
    "crops": Command("pipelines.cli.build_crops", "detect a COCO category in a photo folder and save the crops"),
    "train": Command("pipelines.cli.train_fine", "transfer-learn a crop classifier and report macro-F1"),
    "label": Command("pipelines.cli.label", "detect and classify the objects of every photo in a folder"),
    "calibrate": Command("pipelines.cli.calibrate", "refit a model's temperature and unknown threshold on field crops"),
    "evaluate": Command("pipelines.cli.evaluate", "COCO metrics per class of labeled photos against COCO ground truth"),
    "export": Command("pipelines.cli.export", "export labeled photos for review tools (Label Studio, YOLO txt)"),
    "zoo": Command("detectcrop.zoo", "list, fetch and verify model presets"),
    "make-watches": Command("pipelines.cli.make_watches", "write the synthetic watch benchmark"),
    "demo": Command("pipelines.cli.demo", "the whole story offline on the synthetic benchmark"),
}


#: Subcommands whose ``main`` also takes the arguments `subcommand_parser` parsed (an `argparse.Namespace`).
PARSED = frozenset({"label"})


def get_args_parser() -> argparse.ArgumentParser:
    """The top-level parser (subcommand names and one-line help; the subcommands' own flags live in their modules)."""
    parser = argparse.ArgumentParser(
        prog="detectcrop",
        description="Detect, crop, classify. `detectcrop SUBCOMMAND --help` shows a subcommand's flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=f"{command.help} (python -m {command.entry})", add_help=False)
    return parser


def load(name: str) -> ModuleType:
    """The module of subcommand ``name``."""
    return importlib.import_module(COMMANDS[name].module)


def subcommand_parser(name: str) -> argparse.ArgumentParser:
    """Subcommand ``name``'s own parser, named ``detectcrop NAME`` in usage and errors."""
    build = load(name).get_args_parser
    prog = f"detectcrop {name}"
    if "prog" in inspect.signature(build).parameters:  # parsers with subcommands name them from the start
        return build(prog=prog)
    parser = build()
    parser.prog = prog
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        get_args_parser().parse_args(argv[:1])  # prints help, or the error naming the subcommands; exits
        return 2
    name, rest = argv[0], argv[1:]
    args = subcommand_parser(name).parse_args(rest)  # --help and usage errors under the console's name; exits on those
    module = load(name)
    if name in PARSED:  # its main takes the parsed arguments: argv is parsed once
        return int(module.main(args) or 0)
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
