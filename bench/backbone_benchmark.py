"""Which offline backbone, and which recipe, labels best: measured on the hard and normal synthetic benchmarks.

    python -m bench.backbone_benchmark --work /tmp/backbone_bench --json bench/backbone_benchmark.json

Data: ``make_watches`` training photos (seed 0) and test photos (seed 1) of the same catalogue, cut at their
ground-truth boxes (pad 0.1). Each variant is split twice into known and held-out brands: the last brands by name
(hard: the fifth family) and the first ones (hard: the first family); the model learns the known brands, is tested on
their test crops, and the held-out brands' test crops are the open set. Every run is the ``train_fine`` command with
``--test-data`` and ``--open-set-data``; its ``report.json`` gives the model's and the linear probe's test macro-F1,
the open-set AUROC of every score and the ECE after temperature scaling.

Frozen features (``--stage probe``): the linear probe and two open-set scores of each candidate backbone and input
size on the same crops, without training.

Speed (``--stage speed``), side by side in one process, alternating the backbones: labeling cost per crop (a forward
pass of a batch of 32) and one fine-tuning step (batch 32, forward and backward with the blocks the backbone's default
recipe unfreezes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("bench.backbone")

VARIANTS = {  # brands, training photos per brand, test photos per brand, held-out brands per split
    "hard": (20, 20, 10, 4),
    "normal": (8, 20, 10, 2),
}
#: Augmentations measured before they changed, kept as albumentations dicts (``AUG/name.json`` in recipes).
AUGMENTATIONS = Path(__file__).parent / "augmentations"
RECIPES = {  # train_fine options of each recipe; NATIVE: the backbone's ImageNet input size
    "head": ["--input-size", "NATIVE", "--fine-tune-blocks", "0", "--augment", "colour"],  # the head alone
    "previous": ["--input-size", "NATIVE", "--fine-tune-blocks", "4", "--augment", "colour"],  # the earlier default
    "448px": ["--input-size", "448", "--fine-tune-blocks", "4", "--augment", "AUG/no_downscale.json"],
    "no-downscale": ["--input-size", "448", "--fine-tune-blocks", "8", "--augment", "AUG/no_downscale.json"],
    "default": [],  # the library's defaults (the offline backbone: 448 px, top 8 blocks, default augmentation)
    "colour": ["--input-size", "448", "--fine-tune-blocks", "8", "--augment", "colour"],  # colour kept
    "strong-no-downscale": ["--input-size", "448", "--fine-tune-blocks", "8", "--augment",
                            "AUG/strong_no_downscale.json"],
    "strong": ["--input-size", "448", "--fine-tune-blocks", "8", "--augment", "strong"],
}
SCORES = ("max_softmax", "max_logit", "energy", "class_mean_cosine", "knn_cosine")


def recipe_options(recipe: str, backbone: str) -> list[str]:
    """``train_fine`` options of ``recipe`` for ``backbone``."""
    from detectcrop.zoo.presets import PRESETS

    def resolved(option: str) -> str:
        if option == "NATIVE":
            return str(PRESETS[backbone].input_size[0])
        return str(AUGMENTATIONS / option.removeprefix("AUG/")) if option.startswith("AUG/") else option

    return [resolved(option) for option in RECIPES[recipe]]


def make_crops(work: Path, variant: str, split: str, seed: int, photos_per_brand: int) -> Path:
    """Ground-truth crops of one photo set, one folder per brand (written once)."""
    from detectcrop.crops import CropPolicy, save_jpeg
    from pipelines.synthetic import generate, ground_truth_crops, load_ground_truth

    brands = VARIANTS[variant][0]
    photos, crops = work / f"{variant}_{split}_photos", work / f"{variant}_{split}_crops"
    if not (photos / "annotations.json").exists():
        generate(photos, brands=brands, photos_per_brand=photos_per_brand, seed=seed, difficulty=variant,
                 overwrite=True)
    if not (crops / "done").exists():
        truth = load_ground_truth(photos / "annotations.json", split="photos")
        for crop in ground_truth_crops(truth, CropPolicy(pad=0.1, min_size=0)):
            (crops / crop.label).mkdir(parents=True, exist_ok=True)
            save_jpeg(crops / crop.label / f"{Path(crop.file_name).stem}_{crop.annotation_id}.jpg", crop.image,
                      fsync=False)
        (crops / "done").write_text("")
    return crops


def split_folders(crops: Path, out: Path, held_out: list[str]) -> tuple[Path, Path]:
    """``out/known`` and ``out/unseen``: hard links to the crops of the known and the held-out brands."""
    known, unseen = out / "known", out / "unseen"
    if not (out / "done").exists():
        for brand in sorted(p.name for p in crops.iterdir() if p.is_dir()):
            dest = (unseen if brand in held_out else known) / brand
            dest.mkdir(parents=True, exist_ok=True)
            for f in sorted((crops / brand).iterdir()):
                if not (dest / f.name).exists():
                    os.link(f, dest / f.name)
        (out / "done").write_text("")
    return known, unseen


def run_train_fine(args: argparse.Namespace, run: Path, train: Path, test: Path, unseen: Path, backbone: str,
                   recipe: str, seed: int) -> dict[str, Any]:
    """One ``train_fine`` run (skipped when its report exists); the figures this benchmark reports."""
    cmd = [sys.executable, "-m", "pipelines.cli.train_fine", "--data", str(train), "--test-data", str(test),
           "--open-set-data", str(unseen), "--output", str(run), "--backbone", backbone, "--seed", str(seed),
           "--cache-dir", str(args.work / "cache"), "--no-progress", "--log-level", "WARNING",
           *recipe_options(recipe, backbone)]
    if not (run / "report.json").exists():
        run.parent.mkdir(parents=True, exist_ok=True)
        logger.info("running %s", " ".join(cmd[1:]))
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    report = json.loads((run / "report.json").read_text())
    config = json.loads((run / "config.json").read_text())
    test_m, cal, open_set = report["test"], report.get("calibration", {}), report["open_set"]
    return {
        "backbone": backbone, "recipe": recipe, "seed": seed,
        "test_macro_f1": test_m["macro_f1"], "test_accuracy": test_m["accuracy"],
        "probe_macro_f1": test_m.get("linear_probe_macro_f1"),
        "val_macro_f1": report["val"]["macro_f1"],
        "auroc": {s: open_set["scores"][s]["auroc"] for s in SCORES if s in open_set["scores"]},
        "fpr_at_95_tpr": {s: open_set["scores"][s]["fpr_at_95_tpr"] for s in SCORES if s in open_set["scores"]},
        "temperature": cal.get("temperature"), "ece_before": cal.get("ece_before"), "ece_after": cal.get("ece_after"),
        "wall_s": config.get("wall_s"),
    }


def accuracy_stage(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for variant in args.variants:
        _, train_ppb, test_ppb, n_out = VARIANTS[variant]
        train_crops = make_crops(args.work, variant, "train", 0, train_ppb)
        test_crops = make_crops(args.work, variant, "test", 1, test_ppb)
        names = sorted(p.name for p in train_crops.iterdir() if p.is_dir())
        for split, held in (("last", names[-n_out:]), ("first", names[:n_out])):
            if split not in args.splits:
                continue
            train, _ = split_folders(train_crops, args.work / f"{variant}_{split}" / "train", held)
            test, unseen = split_folders(test_crops, args.work / f"{variant}_{split}" / "test", held)
            for backbone in args.backbones:
                for recipe in args.recipes:
                    for seed in args.seeds:
                        run = args.work / "runs" / f"{variant}_{split}_{backbone}_{recipe}_s{seed}"
                        row = {"variant": variant, "split": split, "held_out": held,
                               **run_train_fine(args, run, train, test, unseen, backbone, recipe, seed)}
                        logger.info("%s", {k: v for k, v in row.items() if k not in ("auroc", "fpr_at_95_tpr")})
                        rows.append(row)
    return rows


def probe_stage(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Frozen features only: the linear probe's test macro-F1 and the energy / class-mean cosine open-set AUROC of
    each ``name@size`` candidate in ``--probe-candidates``, on the crops of the accuracy stage (all training crops,
    no validation split)."""
    from scipy.special import logsumexp
    from sklearn.metrics import f1_score, roc_auc_score

    from classify import Backbone
    from classify.probe import fit_linear_probe
    from detectcrop.io.images import read_image

    def folder(crops: Path) -> tuple[list[np.ndarray], np.ndarray]:
        files = sorted(crops.glob("*/*.jpg"))
        return [read_image(f) for f in files], np.array([f.parent.name for f in files])

    rows = []
    for variant in args.variants:
        _, train_ppb, test_ppb, n_out = VARIANTS[variant]
        tr_x, tr_y = folder(make_crops(args.work, variant, "train", 0, train_ppb))
        te_x, te_y = folder(make_crops(args.work, variant, "test", 1, test_ppb))
        brands = sorted(set(tr_y))
        for candidate in args.probe_candidates:
            name, _, size = candidate.partition("@")
            bb = Backbone.from_preset(name, input_size=int(size) if size else None)
            f_tr, f_te = bb.predict(tr_x), bb.predict(te_x)
            for split, held in (("last", brands[-n_out:]), ("first", brands[:n_out])):
                known_tr, known_te = ~np.isin(tr_y, held), ~np.isin(te_y, held)
                probe = fit_linear_probe(f_tr[known_tr], tr_y[known_tr])
                f1 = f1_score(te_y[known_te], probe.predict(f_te[known_te]), average="macro")
                energy = logsumexp(probe.decision_function(f_te), axis=1)
                unit = f_tr[known_tr] / np.linalg.norm(f_tr[known_tr], axis=1, keepdims=True)
                means = np.stack([unit[tr_y[known_tr] == c].mean(0) for c in probe.classes_])
                means /= np.linalg.norm(means, axis=1, keepdims=True)
                cosine = (f_te / np.linalg.norm(f_te, axis=1, keepdims=True) @ means.T).max(1)
                row = {"variant": variant, "split": split, "backbone": name, "input_size": bb.input_size[0],
                       "probe_macro_f1": float(f1), "auroc_energy": float(roc_auc_score(known_te, energy)),
                       "auroc_class_mean_cosine": float(roc_auc_score(known_te, cosine))}
                logger.info("%s", row)
                rows.append(row)
    return rows


def _trained_run(work: Path, name: str, size: tuple[int, int]) -> Path | None:
    """A trained hard-last run of ``name`` at ``size`` for the LiteRT timing: seed 0 first, the head recipe first
    among a seed's runs (the forward pass is the same whatever the recipe or seed)."""
    def preference(run: Path) -> tuple[bool, bool, str]:
        stem, seed = run.name.rsplit("_s", 1)  # runs are named {variant}_{split}_{backbone}_{recipe}_s{seed}
        return seed != "0", not stem.endswith("_head"), run.name

    runs = sorted((work / "runs").glob(f"hard_last_{name}_*_s*"), key=preference)
    for run in runs:
        config = run / "config.json"
        if (run / "model.keras").exists() and config.exists():
            if tuple(json.loads(config.read_text())["model"]["input_size"]) == tuple(size):
                return run
    return None


def speed_stage(work: Path, candidates: list[str], rounds: int) -> dict[str, Any]:
    """Per-crop labeling cost (TensorFlow, and LiteRT float on a trained run's classifier when the accuracy stage
    left one at that size) and one fine-tuning step of each ``name[@size]`` candidate, alternating in one process."""
    import keras

    from classify.backbones import Backbone, copy_model, set_fine_tunable
    from classify.model import resolve_fine_tune_blocks
    from detectcrop.runtime.classifier_cache import load_litert_classifier

    crops = sorted((work / "hard_last" / "test" / "known").rglob("*.jpg"))[:64]
    backbones: dict[str, Backbone] = {}
    litert = {}
    for candidate in candidates:
        name, _, size = candidate.partition("@")
        backbones[candidate] = bb = Backbone.from_preset(name, input_size=int(size) if size else None)
        run = _trained_run(work, name, bb.input_size)
        if run is not None and crops:
            litert[candidate] = load_litert_classifier(run, precision="float")

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (32, 480, 480, 3), dtype=np.uint8)
    models = {}
    for name, bb in backbones.items():
        net = copy_model(bb.net)
        set_fine_tunable(net, resolve_fine_tune_blocks("auto", bb))
        inputs = keras.Input((*bb.input_size, 3))
        outputs = keras.layers.Dense(16, activation="softmax")(net(bb.model.layers[1](inputs)))
        trainer = keras.Model(inputs, outputs)
        trainer.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        models[name] = (bb, trainer, bb.prepare(batch))
    labels = rng.integers(0, 16, 32)
    times: dict[str, dict[str, list[float]]] = {n: {"infer": [], "train": [], "litert": []} for n in candidates}
    for r in range(rounds + 1):  # round 0 warms up
        for name, (bb, trainer, x) in models.items():
            t = time.perf_counter()
            bb.predict(batch)  # resize + forward, as label does
            infer = time.perf_counter() - t
            t = time.perf_counter()
            trainer.train_on_batch(x, labels)
            train = time.perf_counter() - t
            if name in litert:
                t = time.perf_counter()
                litert[name].predict_proba(crops)  # read + resize + LiteRT forward
                times[name]["litert"].append((time.perf_counter() - t) / len(crops))
            if r:
                times[name]["infer"].append(infer / len(batch))
                times[name]["train"].append(train / len(batch))
            elif name in litert:
                times[name]["litert"].clear()
    base = candidates[0]
    out = {}
    for name in candidates:
        ratio_i = np.median(np.array(times[name]["infer"]) / np.array(times[base]["infer"]))
        ratio_t = np.median(np.array(times[name]["train"]) / np.array(times[base]["train"]))
        out[name] = {"input_size": list(models[name][0].input_size),
                     "fine_tune_blocks": resolve_fine_tune_blocks("auto", models[name][0]),
                     "label_ms_per_crop": 1000 * float(np.median(times[name]["infer"])),
                     "fine_tune_ms_per_crop": 1000 * float(np.median(times[name]["train"])),
                     "label_ratio": float(ratio_i), "fine_tune_ratio": float(ratio_t)}
        if times[name]["litert"] and times[base]["litert"]:
            out[name]["litert_ms_per_crop"] = 1000 * float(np.median(times[name]["litert"]))
            out[name]["litert_ratio"] = float(np.median(np.array(times[name]["litert"])
                                                        / np.array(times[base]["litert"])))
    return out


def markdown(rows: list[dict[str, Any]], speed: dict[str, Any], probes: list[dict[str, Any]] = ()) -> str:
    lines = ["| variant | split | backbone | recipe | seeds | test macro-F1 (each seed) | probe | gain | "
             "AUROC energy | AUROC max_softmax | AUROC class_mean_cosine | AUROC knn_cosine | ECE after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    order = lambda r: (list(VARIANTS).index(r["variant"]), ("last", "first").index(r["split"]),  # noqa: E731
                       backbones.index(r["backbone"]), list(RECIPES).index(r["recipe"]), r["seed"])
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(rows, key=order):
        groups.setdefault((r["variant"], r["split"], r["backbone"], r["recipe"]), []).append(r)

    def mean(rs, f, fmt=".3f"):
        vals = [f(r) for r in rs if f(r) is not None]
        return f"{np.mean(vals):{fmt}}" if vals else "-"

    for (variant, split, backbone, recipe), rs in groups.items():
        each = ", ".join(f"{r['test_macro_f1']:.3f}" for r in rs)
        gain = mean(rs, lambda r: r["test_macro_f1"] - r["probe_macro_f1"] if r["probe_macro_f1"] is not None
                    else None)
        lines.append(
            f"| {variant} | {split} | `{backbone}` | {recipe} | {len(rs)} | {mean(rs, lambda r: r['test_macro_f1'])} "
            f"({each}) | {mean(rs, lambda r: r['probe_macro_f1'])} | {gain} | "
            + " | ".join(mean(rs, lambda r, s=s: r["auroc"].get(s)) for s in
                         ("energy", "max_softmax", "class_mean_cosine", "knn_cosine"))
            + f" | {mean(rs, lambda r: r['ece_after'])} |")
    recipes = [rc for rc in RECIPES if any(k[3] == rc for k in groups)]
    lines += ["", "| variant | split | backbone | probe | " + " | ".join(recipes) + " | best | "
              + " | ".join(f"train s/run, {rc}" for rc in recipes) + " |", "|---" * (5 + 2 * len(recipes)) + "|"]
    for variant, split, backbone in dict.fromkeys(k[:3] for k in groups):
        per = {rc: groups.get((variant, split, backbone, rc), []) for rc in recipes}
        f1 = {rc: mean(rs, lambda r: r["test_macro_f1"]) for rc, rs in per.items()}
        best = max((v, rc) for rc, v in f1.items() if v != "-")
        probe = mean([r for rs in per.values() for r in rs], lambda r: r["probe_macro_f1"])
        lines.append(f"| {variant} | {split} | `{backbone}` | {probe} | " + " | ".join(f1.values())
                     + f" | {best[0]} ({best[1]}) | "
                     + " | ".join(mean(rs, lambda r: r["wall_s"], ".0f") for rs in per.values()) + " |")
    if probes:
        lines += ["", "| variant | split | backbone | input | probe macro-F1 | AUROC energy | "
                  "AUROC class_mean_cosine |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['split']} | `{r['backbone']}` | {r['input_size']} | "
                  f"{r['probe_macro_f1']:.3f} | {r['auroc_energy']:.3f} | {r['auroc_class_mean_cosine']:.3f} |"
                  for r in probes]
    if speed:
        lines += ["", "| backbone | input | label ms/crop, TF | vs first | label ms/crop, LiteRT float | vs first | "
                  "fine-tune step ms/crop | vs first |", "|---|---|---|---|---|---|---|---|"]
        for name, s in speed.items():
            lite = (f"{s['litert_ms_per_crop']:.1f} | {s['litert_ratio']:.2f}x" if "litert_ms_per_crop" in s
                    else "- | -")
            blocks = f" ({s['fine_tune_blocks']} blocks)" if "fine_tune_blocks" in s else ""
            lines.append(f"| `{name}` | {s['input_size'][0]} | {s['label_ms_per_crop']:.1f} | {s['label_ratio']:.2f}x "
                         f"| {lite} | {s['fine_tune_ms_per_crop']:.1f}{blocks} | {s['fine_tune_ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the figures of ``old`` it did not measure again: runs by variant, split, backbone, recipe and
    seed; the probe and speed stages whole. Commands accumulate in order."""
    key = lambda r: (r["variant"], r["split"], r["backbone"], r["recipe"], r["seed"])  # noqa: E731
    again = {key(r) for r in new["runs"]}
    return {**new, "runs": [r for r in old.get("runs", []) if key(r) not in again] + new["runs"],
            "probes": new["probes"] or old.get("probes", []), "speed": new["speed"] or old.get("speed", {}),
            "commands": [*old.get("commands", [old["command"]] if "command" in old else []), *new["commands"]]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/backbone_bench"))
    p.add_argument("--json", type=Path)
    p.add_argument("--stage", choices=["accuracy", "probe", "speed", "all"], default="all")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--splits", nargs="+", default=["last", "first"], choices=["last", "first"])
    p.add_argument("--backbones", nargs="+", default=["mobilenet_v2_torchvision", "efficientnet_lite2"])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--probe-candidates", nargs="+", metavar="NAME[@SIZE]",
                   default=["mobilenet_v2_torchvision", "efficientnet_lite1", "efficientnet_lite2",
                            "efficientnet_lite2@384"])
    p.add_argument("--speed-candidates", nargs="+", metavar="NAME[@SIZE]",
                   help="speed: backbones (and input sizes) to time, the first is the reference (default: --backbones)")
    p.add_argument("--rounds", type=int, default=5, help="speed: alternating rounds")
    p.add_argument("--merge", action="store_true",
                   help="keep the --json file's figures that this run does not measure again (runs by variant, "
                        "split, backbone, recipe and seed; probes; speed)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    rows = accuracy_stage(args) if args.stage in ("accuracy", "all") else []
    probes = probe_stage(args) if args.stage in ("probe", "all") else []
    speed = {}
    if args.stage in ("speed", "all"):
        speed = speed_stage(args.work, args.speed_candidates or args.backbones, args.rounds)
    command = " ".join(["python -m bench.backbone_benchmark", *(argv if argv is not None else sys.argv[1:])])
    result = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "python": platform.python_version(), "command": command, "commands": [command],
              "runs": rows, "probes": probes, "speed": speed}
    if args.merge and args.json and args.json.exists():
        result = merged(json.loads(args.json.read_text()), result)
    rows, probes, speed = result["runs"], result["probes"], result["speed"]
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(rows, speed, probes))
    return result


if __name__ == "__main__":
    main()
