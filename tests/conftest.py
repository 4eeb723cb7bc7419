"""Shared fixtures: the real offline detector (loaded once per session) and the ``--run-large`` opt-in."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-large", action="store_true", default=False, help="run tests marked `large` (they need the network)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-large"):
        return
    skip = pytest.mark.skip(reason="needs the network; run with --run-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def detector():
    """The offline COCO detector (MobileNetV3-CenterNet, 512x512 input), loaded once for the whole session."""
    from detectcrop import Detector

    return Detector.from_preset("centernet_mobilenetv3_512")
