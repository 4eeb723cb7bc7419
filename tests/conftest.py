"""Shared fixtures: the real offline detector and the stage-2 (classify) data, backbone and fitted model, each built
once per session, and the ``--run-large`` opt-in."""

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


@pytest.fixture(scope="session")
def classify_workdir(tmp_path_factory):
    """A folder shared by the classify tests of this session (crops, the feature cache)."""
    return tmp_path_factory.mktemp("classify")


@pytest.fixture(scope="session")
def train_dir(classify_workdir):
    """Training crops: 4 classes x 6 photos x 2 crops, with crops.csv (see classify_testdata)."""
    from classify_testdata import write_crops

    return write_crops(classify_workdir / "train", photos_per_class=6, crops_per_photo=2, seed=0)


@pytest.fixture(scope="session")
def heldout_dir(classify_workdir):
    """Held-out crops of other photos: 4 classes x 3 photos x 2 crops, no manifest."""
    from classify_testdata import write_crops

    return write_crops(classify_workdir / "test", photos_per_class=3, crops_per_photo=2, seed=123, manifest=False)


@pytest.fixture(scope="session")
def offline_backbone():
    """The real offline backbone (torchvision ImageNet MobileNetV2, 224x224), built once; tests only read it."""
    from classify.backbones import Backbone

    return Backbone.from_preset("mobilenet_v2_torchvision")


@pytest.fixture(scope="session")
def fitted(offline_backbone, train_dir, heldout_dir, classify_workdir):
    """``(classifier, train, test)``: a FineClassifier trained once on `train_dir` (grouped split) with the offline
    backbone, and the held-out folder it is judged on."""
    from classify import FineClassifier, load_image_folder

    train = load_image_folder(train_dir, min_per_class=2)
    test = load_image_folder(heldout_dir, class_names=train.class_names)
    clf = FineClassifier(offline_backbone, epochs=15, augment_views=1, fine_tune_blocks=0, seed=0,
                         cache_dir=classify_workdir / "cache")
    clf.fit(train.paths, train.label_names, groups=train.groups)
    return clf, train, test
