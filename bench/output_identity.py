"""The folder commands' outputs on the demo data, written into one folder, for a byte-by-byte comparison of versions.

    python -m bench.output_identity --work WORK --tag before      # data and model made once in WORK, reused
    python -m bench.output_identity --work WORK --tag after
    python -m bench.output_identity --work WORK --compare before after

The synthetic watches and the trained model are made once (WORK/data, WORK/model) so that both versions label with
the same weights; each tag then runs build_crops (local and Ray), label (local, Ray, LiteRT, annotated, with COCO
ground truth), evaluate and both exports into WORK/<tag>. ``--compare`` runs ``cmp`` on every file of the two trees
and exits 1 on any difference or a file that only one side has.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from detectcrop.zoo import OFFLINE_BACKBONE, OFFLINE_DETECTOR


def _run(*args: str) -> None:
    cmd = [sys.executable, "-m", "pipelines.console", *args, *(["--no-progress"] if args[0] in {
        "crops", "label", "train"} else []), "--log-level", "ERROR"]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def prepare(work: Path) -> tuple[Path, Path]:
    data, model = work / "data", work / "model"
    if not (data / "annotations.json").exists():
        subprocess.run([sys.executable, "-m", "pipelines.make_watches", str(data), "--brands", "4",
                        "--photos-per-brand", "12", "--scenes", "8", "--quiet"], check=True)
        (data / "scenes" / "damaged upload.jpg").write_bytes((data / "scenes" / "scene_0000.jpg").read_bytes()[:2000])
    if not (model / "model.keras").exists():
        _run("crops", "--input", str(data / "photos"), "--output", str(work / "train_crops"), "--category", "clock",
             "--detector", OFFLINE_DETECTOR)
        _run("train", "--data", str(work / "train_crops"), "--output", str(model), "--backbone", OFFLINE_BACKBONE,
             "--epochs", "2", "--fine-tune-blocks", "0", "--seed", "0")
    return data, model


def outputs(work: Path, tag: str) -> None:
    data, model = prepare(work)
    out = work / tag
    if out.exists():
        sys.exit(f"error: {out} exists; choose another --tag")
    out.mkdir()
    det = ["--detector", OFFLINE_DETECTOR]
    _run("crops", "--input", str(data / "photos"), "--output", str(out / "crops"), "--category", "clock", *det)
    _run("crops", "--input", str(data / "photos"), "--output", str(out / "crops_ray"), "--category", "clock", *det,
         "--engine", "ray", "--actors", "2")
    common = ["--input", str(data / "scenes"), "--model", str(model), *det, "--coco-gt",
              str(data / "annotations.json"), "--image-prefix", "scenes/"]
    _run("label", *common, "--output", str(out / "labels"), "--annotate", "--tile")
    _run("label", *common, "--output", str(out / "labels_ray"), "--engine", "ray", "--actors", "2")
    _run("label", *common, "--output", str(out / "labels_litert"), "--runtime", "litert")
    _run("evaluate", "--predictions", str(out / "labels"), "--ground-truth", str(data / "annotations.json"),
         "--image-prefix", "scenes/")
    _run("export", "--predictions", str(out / "labels"), "--format", "labelstudio")
    _run("export", "--predictions", str(out / "labels"), "--format", "yolo", "--output", str(out / "yolo"))


def compare(work: Path, a: str, b: str) -> int:
    left, right = work / a, work / b
    names = {p.relative_to(left) for p in left.rglob("*") if p.is_file()}
    others = {p.relative_to(right) for p in right.rglob("*") if p.is_file()}
    bad = 0
    for name in sorted(names ^ others):
        print(f"only in {a if name in names else b}: {name}")
        bad += 1
    for name in sorted(names & others):
        if subprocess.run(["cmp", "-s", str(left / name), str(right / name)]).returncode != 0:
            print(f"differs: {name}")
            bad += 1
    print(f"{len(names & others)} files compared with cmp, {bad} differences")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--tag")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"))
    args = p.parse_args()
    if args.compare:
        return compare(args.work, *args.compare)
    if not args.tag:
        p.error("--tag or --compare is required")
    args.work.mkdir(parents=True, exist_ok=True)
    outputs(args.work, args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
