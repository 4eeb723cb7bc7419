"""Shared fixtures (the real offline detector and the stage-2 data, backbone and fitted model, each built once per
session), the ``--run-large`` opt-in, the session's own model cache and the test tiers.

Model cache: a session never writes into the user's ``$DETECTCROP_HOME`` (default ``~/.cache/detectcrop``). At start
(`pytest_configure` of the controller; xdist workers and every subprocess inherit the environment) a temporary home is
made whose ``models/``, ``litert/`` and ``tfhub/`` entries mirror the real cache's: real folders holding symbolic links
to the real files. The cache code only replaces entries (``os.replace`` into the temporary home) and never writes into
a file it finds there, so a rebuilt or corrupted model lands in the temporary home; tests that need a missing or
corrupt cache point ``DETECTCROP_HOME`` at a folder of their own.

Tiers: every test carries exactly one of

* ``unit``: no model weights, no TensorFlow graph of a real model, fast (``make test-unit``);
* ``integration``: the real models (the offline detector and backbones of the model cache, LiteRT conversion, the
  session's classifier trained on real weights);
* ``slow``: trains its own model on real weights, int8 conversion, Ray clusters, hostile multi-process runs (killed
  CLIs, full disks), the notebook, the wheel build.

A test's tier is an explicit ``pytest.mark.<tier>`` (on the test or its module's ``pytestmark``) where there is one,
else it is read from what the test uses (`tier_of`): the shared fixtures it requests (`FIXTURE_TIERS`) and the source
it runs, i.e. its function, the fixtures of tests/ it requests and the helpers of tests/ those name, searched for the
`SIGNALS`. A unit test that loads a fetched model fails (`_unit_tests_load_no_model`).
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "slow")

#: The shared fixtures that load or train a real model, or set up what only slow tests do; requesting one (directly
#: or through another fixture) makes a test at least this tier. Their own source is not searched.
FIXTURE_TIERS = {
    "detector": "integration",  # the offline CenterNet detector
    "offline_backbone": "integration",  # the offline MobileNetV2 backbone
    "fitted": "integration",  # the session's FineClassifier, trained once on the offline backbone
    "litert_detector": "integration",  # the offline detector converted to LiteRT
    "ray_session": "slow",  # a local Ray instance
    "cluster": "slow",  # a two-node Ray cluster
    "small_disk": "slow",  # a tiny tmpfs mount: full-disk and read-only runs
    "chromium": "slow",  # a real headless Chromium (Debian's package, installed when missing)
}

#: What the searched source uses. ``real`` names a model of the zoo (a preset name or ``zoo.OFFLINE_DETECTOR`` and
#: the like; not in ``match=`` of an expected error) and ``loads`` calls a loader: together, a real model (integration);
#: ``trains``, ``int8`` and ``kills`` make a test that uses a real model slow; ``ray`` and ``wheel`` make any test slow.
SIGNALS = {
    "real": re.compile(r"\bzoo\.(?:OFFLINE|DEFAULT)_(?:DETECTOR|BACKBONE)\b"),  # `_signals` adds the preset names
    "loads": re.compile(r"\.from_preset\(|\bFineClassifier\(|\bDetectThenClassify\(|\bensure\(|converted_detector\("
                        r"|['\"]--(?:detector|backbone)['\"]"),
    "trains": re.compile(r"\.fit\(|\btrain_fine\.main\(|\bNotebookClient\("),
    "int8": re.compile(r"['\"]int8['\"]"),
    "kills": re.compile(r"\bos\.kill\(|\.kill\(\)|\bsignal\.SIG[A-Z]+|\.send_signal\(|\bkillpg\("),
    "ray": re.compile(r"^\s*import ray\b|\bray\.init\(|['\"]--engine['\"],\s*['\"]ray['\"]|--ray-address|\bRAY_ARGS\b",
                      re.MULTILINE),
    "wheel": re.compile(r"['\"]pip['\"],\s*['\"]wheel['\"]"),
}


def _signals() -> dict[str, re.Pattern]:
    from detectcrop import presets

    names = "|".join(re.escape(n) for n in sorted(presets.PRESETS, key=len, reverse=True))
    real = re.compile(rf"{SIGNALS['real'].pattern}|['\"](?:{names})['\"]")
    return {**SIGNALS, "real": real}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-large", action="store_true", default=False, help="run tests marked `large` (they need the network)"
    )


# --- the session's model cache ----------------------------------------------------------------------------------

_SEEDED = "DETECTCROP_TEST_HOME_SEEDED_FROM"  # set beside DETECTCROP_HOME: workers and subprocesses reuse the home
_HOME = pytest.StashKey[Path]()  # the temporary home, in the process that made it (removed at its end)


def _mirror(src: Path, dst: Path) -> None:
    """``dst``: the folders of ``src`` re-made, each file a symbolic link to the real one (never a linked folder, so
    nothing written into ``dst`` reaches ``src``)."""
    for folder, dirs, files in os.walk(src):
        rel = Path(folder).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # staging folders of a fetch in progress
        for name in files:
            os.symlink(Path(folder, name), dst / rel / name)


def _seed_home(real: Path, home: Path) -> None:
    from detectcrop import cache, presets

    fetched = real / "models"
    missing = [n for n in presets.names(offline=True) if not (fetched / n / cache.MANIFEST).is_file()]
    if missing:
        raise pytest.UsageError(f"the model cache {real} lacks the fetched models {', '.join(missing)}: "
                                "run `make setup` (it fetches them) before the tests")
    for kind in ("models", "litert", "tfhub"):  # fetched models, LiteRT conversions, TF Hub downloads
        for entry in sorted((real / kind).glob("[!.]*")):
            if entry.is_dir():
                _mirror(entry, home / kind / entry.name)
            elif entry.is_file():  # tfhub's descriptor files
                (home / kind).mkdir(parents=True, exist_ok=True)
                os.symlink(entry, home / kind / entry.name)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(_SEEDED) and os.environ.get("DETECTCROP_HOME"):
        return  # an xdist worker (or a nested session): the controller's home, inherited
    from detectcrop import cache

    try:
        real = cache.home_dir().resolve()
    except NotADirectoryError as exc:
        raise pytest.UsageError(str(exc)) from None
    home = Path(tempfile.mkdtemp(prefix="detectcrop-test-home-"))
    try:
        _seed_home(real, home)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    config.stash[_HOME] = home
    os.environ["DETECTCROP_HOME"] = str(home)
    os.environ[_SEEDED] = str(real)


def pytest_unconfigure(config: pytest.Config) -> None:
    home = config.stash.get(_HOME, None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)  # links and what the session wrote; the real cache is not followed


# --- tiers ------------------------------------------------------------------------------------------------------


def _own_source(obj) -> str | None:
    """The source of a function or class defined in a test module or helper of tests/ (conftest.py excluded: its
    fixtures are judged by `FIXTURE_TIERS`), else ``None``."""
    obj = inspect.unwrap(obj)
    try:
        path = inspect.getsourcefile(obj)
    except TypeError:
        return None
    if path is None or Path(path).resolve().parent != TESTS or Path(path).name == "conftest.py":
        return None
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return None


def _used_source(roots: list, seen: set[int] | None = None) -> str:
    """The source of ``roots`` and, transitively, of the functions and classes of tests/ it names; constants it names
    (strings, tuples of names) are added as their values."""
    seen = set() if seen is None else seen
    parts, todo = [], list(roots)
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        text = _own_source(obj)
        if text is None:
            continue
        parts.append(text)
        scope = getattr(inspect.unwrap(obj), "__globals__", None)
        if scope is None:
            scope = vars(inspect.getmodule(obj) or object)
        for name in set(re.findall(r"\b[A-Za-z_]\w*\b", text)):
            value = scope.get(name)
            if inspect.isfunction(value) or inspect.isclass(value):
                todo.append(value)
            elif isinstance(value, str | tuple | list | frozenset | set | dict):
                parts.append(repr(value)[:4000])
    return "\n".join(parts)


_EXPECTED_MESSAGE = re.compile(r"\bmatch\s*=\s*(?:zoo\.\w+|r?(['\"])[^'\"]*\1)")


def tier_of(item: pytest.Item, signals: dict[str, re.Pattern]) -> tuple[str, str]:
    """``(tier, why)`` read from what ``item`` uses (see the module docstring)."""
    fixtures = set(getattr(item, "fixturenames", ()))
    slow = sorted(f for f in fixtures if FIXTURE_TIERS.get(f) == "slow")
    if slow:
        return "slow", f"fixture {slow[0]}"
    roots = [getattr(item, "function", None)]
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    roots += [d[-1].func for name, d in defs.items() if d and name not in FIXTURE_TIERS]
    text = _used_source([r for r in roots if r is not None])
    text = _EXPECTED_MESSAGE.sub("", text)
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        text += "\n" + repr(callspec.params)
    found = {name for name, pattern in signals.items() if pattern.search(text)}
    if "ray" in found:
        return "slow", "Ray"
    if "wheel" in found:
        return "slow", "builds the wheel"
    real_fixtures = sorted(f for f in fixtures if FIXTURE_TIERS.get(f) == "integration")
    real = real_fixtures[0] if real_fixtures else ("a zoo model" if {"real", "loads"} <= found else None)
    if item.get_closest_marker("large") is not None:
        real = real or "an online model"
    if real is None:
        return "unit", "no real model"
    for signal, what in (("trains", "trains"), ("int8", "converts to int8"), ("kills", "kills a run")):
        if signal in found:
            return "slow", f"{what} with {real}"
    return "integration", real


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    signals = _signals()
    wrong = []
    for item in items:
        explicit = {m.name for m in item.iter_markers() if m.name in TIERS}
        if not explicit:
            tier, why = tier_of(item, signals)
            item.add_marker(getattr(pytest.mark, tier)(why=why))
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {', '.join(sorted(tiers)) or 'no tier'}")
    if wrong:
        raise pytest.UsageError(f"every test needs exactly one tier marker of {', '.join(TIERS)}; "
                                f"{len(wrong)} do not: {'; '.join(wrong[:10])}")
    if not config.getoption("--run-large"):
        skip = pytest.mark.skip(reason="needs the network; run with --run-large")
        for item in items:
            if "large" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _unit_tests_load_no_model(request, monkeypatch):
    """A unit test that asks the zoo for a fetched model fails: it is not a unit test."""
    if request.node.get_closest_marker("unit") is None:
        return
    from detectcrop import presets, zoo

    real, fetched = zoo.ensure, set(presets.names(offline=True))

    def ensure(name, *args, **kwargs):
        if name in fetched:
            pytest.fail(f"a unit test loads the fetched model {name}: mark it integration (or slow)", pytrace=False)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(zoo, "ensure", ensure)


# --- shared fixtures --------------------------------------------------------------------------------------------


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
