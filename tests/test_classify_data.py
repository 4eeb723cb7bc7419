"""classify.data: folder reading, manifest groups and the grouped stratified split (no backbone needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from classify_testdata import SOURCES, write_crops

from classify.data import grouped_split, load_image_folder, split_image_folder
from detectcrop.io import csv_text


def _source_of(dataset) -> dict[Path, str]:
    with open(dataset.root / "crops.csv", newline="") as f:
        return {(dataset.root / r["crop_path"]).resolve(): r["source_path"] for r in csv.DictReader(f)}


def test_reads_class_folders_and_ignores_manifests(train_dir):
    ds = load_image_folder(train_dir)
    assert ds.class_names == sorted(SOURCES)
    assert len(ds) == len(SOURCES) * 6 * 2
    assert all(p.suffix == ".jpg" for p in ds.paths)
    assert set(ds.class_counts().values()) == {12}
    assert all(p.parent.name == name for p, name in zip(ds.paths, ds.label_names, strict=True))


def test_groups_follow_source_photo_and_duplicate_group(train_dir):
    ds = load_image_folder(train_dir)
    source = _source_of(ds)
    group_of = dict(zip([p.resolve() for p in ds.paths], ds.groups, strict=True))
    by_source: dict[str, set] = {}
    for path, src in source.items():
        by_source.setdefault(src, set()).add(group_of[path])
    assert all(len(g) == 1 for g in by_source.values()), "crops of one photo must share a group"
    # photos 0 and 1 of a class are linked by a duplicate group, photos 2 and 3 are not
    g = {src: next(iter(gs)) for src, gs in by_source.items()}
    assert g["photos/cat/cat_000.jpg"] == g["photos/cat/cat_001.jpg"]
    assert g["photos/cat/cat_002.jpg"] != g["photos/cat/cat_003.jpg"]
    assert len(set(ds.groups.tolist())) == len(SOURCES) * 4  # 6 photos -> pairs {0,1}, {4,5} merged


@pytest.mark.parametrize("seed", range(6))
def test_grouped_split_never_puts_a_photo_on_both_sides(train_dir, seed):
    ds = load_image_folder(train_dir)
    train, val = split_image_folder(ds, val_fraction=0.25, seed=seed)
    source = _source_of(ds)
    train_src = {source[p.resolve()] for p in train.paths}
    val_src = {source[p.resolve()] for p in val.paths}
    assert train_src and val_src and not train_src & val_src
    assert not set(train.groups.tolist()) & set(val.groups.tolist())
    assert set(train.label_names) == set(val.label_names) == set(SOURCES)  # stratified: every class on both sides
    assert len(train) + len(val) == len(ds)


def test_split_is_repeatable_for_a_seed(train_dir):
    ds = load_image_folder(train_dir)
    a = grouped_split(ds.labels, ds.groups, seed=3)
    b = grouped_split(ds.labels, ds.groups, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_without_manifest_each_crop_is_its_own_group(tmp_path):
    root = write_crops(tmp_path / "d", photos_per_class=2, crops_per_photo=2, seed=1, manifest=False)
    ds = load_image_folder(root)
    assert len(set(ds.groups.tolist())) == len(ds)


def test_too_few_images_is_a_clear_error(tmp_path):
    root = write_crops(tmp_path / "d", photos_per_class=2, crops_per_photo=1, seed=1)
    with pytest.raises(ValueError, match=r"too few images.*'astronaut': 2.*at least 5"):
        load_image_folder(root, min_per_class=5)
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match="'empty': 0"):
        load_image_folder(root, min_per_class=1)


def test_a_class_from_one_photo_cannot_be_split(tmp_path):
    root = write_crops(tmp_path / "d", photos_per_class=1, crops_per_photo=3, seed=1)
    ds = load_image_folder(root)
    with pytest.raises(ValueError, match="fewer than 2 source photos") as err:
        split_image_folder(ds)
    assert "'astronaut', 'cat', 'coffee', 'rocket'" in str(err.value)  # class names, not label indices
    assert "np.int64" not in str(err.value)


def test_split_errors_name_classes_and_what_to_change(tmp_path):
    root = write_crops(tmp_path / "d", photos_per_class=3, crops_per_photo=1, seed=1, manifest=False)
    ds = load_image_folder(root)
    labels = np.r_[ds.labels, 4, 4]  # a fifth class, "zebra", with two crops of one photo
    groups = np.concatenate([ds.groups, ["zebra-photo", "zebra-photo"]])
    with pytest.raises(ValueError, match=r"class\(es\) 'zebra' have images from fewer than 2") as err:
        grouped_split(labels, groups, class_names=[*ds.class_names, "zebra"])
    assert "np.int64" not in str(err.value)


def test_corrupt_and_non_image_files_are_skipped_and_named(tmp_path, caplog):
    root = write_crops(tmp_path / "d", photos_per_class=2, crops_per_photo=1, seed=1, manifest=False)
    (root / "cat" / "truncated.jpg").write_bytes((root / "cat" / "cat_000_0.jpg").read_bytes()[:200])
    (root / "cat" / "notes.jpg").write_text("not an image")
    (root / "coffee" / "empty.png").write_bytes(b"")
    (root / "coffee" / "readme.txt").write_text("hello")
    with caplog.at_level("WARNING", logger="classify.data"):
        ds = load_image_folder(root)
    assert len(ds) == 8 and ds.class_counts() == dict.fromkeys(sorted(SOURCES), 2)
    skipped = {Path(s["path"]).name: s["reason"] for s in ds.skipped}
    assert set(skipped) == {"truncated.jpg", "notes.jpg", "empty.png", "readme.txt"}
    assert "empty" in skipped["empty.png"] and "not an image" in skipped["readme.txt"]
    for name in skipped:
        assert name in caplog.text
    assert ds.subset([0, 1]).skipped == ds.skipped


def test_test_folder_maps_onto_known_classes(tmp_path):
    root = write_crops(tmp_path / "d", photos_per_class=1, crops_per_photo=1, seed=1, manifest=False)
    ds = load_image_folder(root, class_names=["astronaut", "cat", "coffee", "rocket", "zebra"])
    assert ds.class_names[-1] == "zebra" and ds.class_counts()["zebra"] == 0
    with pytest.raises(ValueError, match="does not know"):
        load_image_folder(root, class_names=["cat", "coffee"])


def test_missing_folder():
    with pytest.raises(FileNotFoundError):
        load_image_folder("/nonexistent/crops")


def _jpg(path: Path, seed: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG")


def test_a_manifest_with_spreadsheet_safe_cells_still_groups_by_photo(tmp_path):
    """build_crops writes ``'-dup/p0_a.jpg`` for a class folder starting with ``-``: read back, it is the same crop."""
    rows = [("crop_path", "source_path", "duplicate_group")]
    for cls in ("-dup", "dup"):
        for photo in range(3):
            for k in "abcd":
                _jpg(tmp_path / cls / f"p{photo}_{k}.jpg", photo)
                rows.append((f"{cls}/p{photo}_{k}.jpg", f"photos/{cls}/p{photo}.jpg", -1))
    (tmp_path / "crops.csv").write_text(csv_text(rows))
    assert "'-dup/p0_a.jpg" in (tmp_path / "crops.csv").read_text()
    dataset = load_image_folder(tmp_path)
    for cls in ("-dup", "dup"):
        label = dataset.class_names.index(cls)
        assert len(set(dataset.groups[dataset.labels == label].tolist())) == 3  # one group per photo


def test_every_entry_that_is_not_a_crop_is_accounted_for(tmp_path):
    import os

    for rel in ("a/x0.jpg", "a/x1.jpg", "b/y0.jpg", "b/y1.jpg", ".hidden_class/z.jpg", "top.jpg"):
        _jpg(tmp_path / rel)  # top.jpg: a crop outside any class folder
    (tmp_path / "a" / ".hidden.jpg").write_bytes((tmp_path / "a" / "x0.jpg").read_bytes())
    (tmp_path / "a" / "broken.jpg").symlink_to(tmp_path / "missing.jpg")
    (tmp_path / "a" / "linked_folder").symlink_to(tmp_path / "b")
    os.mkfifo(tmp_path / "b" / "pipe.jpg")
    (tmp_path / "notes.txt").write_text("a manifest-like file at the top: not an input")
    dataset = load_image_folder(tmp_path, min_per_class=2)
    assert dataset.class_names == ["a", "b"] and len(dataset) == 4
    reasons = {Path(s["path"]).relative_to(tmp_path).as_posix(): s["reason"] for s in dataset.skipped}
    assert set(reasons) == {".hidden_class", "top.jpg", "a/.hidden.jpg", "a/broken.jpg", "a/linked_folder",
                            "b/pipe.jpg"}  # a hidden folder once, not searched
    assert "broken symbolic link" in reasons["a/broken.jpg"] and "not followed" in reasons["a/linked_folder"]
    assert "top level" in reasons["top.jpg"] and "hidden" in reasons["a/.hidden.jpg"]


def test_class_folder_names_are_unicode_normalised_and_must_be_utf8(tmp_path):
    import os
    import unicodedata

    nfd = unicodedata.normalize("NFD", "Ünï")
    for rel in (f"{nfd}/x0.jpg", f"{nfd}/x1.jpg", "plain/y0.jpg", "plain/y1.jpg"):
        _jpg(tmp_path / "train" / rel)
    assert load_image_folder(tmp_path / "train").class_names == ["plain", "Ünï"]  # NFC, as typed on most systems
    _jpg(tmp_path / "train" / "Ünï" / "z.jpg")
    with pytest.raises(ValueError, match="two class folders"):
        load_image_folder(tmp_path / "train")
    bad = tmp_path / "bad"
    _jpg(bad / "ok" / "x.jpg")
    os.mkdir(os.path.join(os.fsencode(bad), b"caf\xe9"))
    with pytest.raises(ValueError, match=r"caf\\xe9.*not valid UTF-8"):
        load_image_folder(bad)


def test_arrays_and_pillow_images_are_read_as_their_files(tmp_path):
    from detectcrop.images import read_image
    from PIL import Image
    from skimage import data

    from classify.batches import as_rgb_uint8, iter_items

    rgb = data.astronaut()[::4, ::4]
    rgba = np.dstack([rgb, np.tile(np.linspace(0, 255, rgb.shape[1], dtype=np.uint8), (rgb.shape[0], 1))])
    files = {"rgba.png": Image.fromarray(rgba), "gray16.png": Image.fromarray(rgb[..., 1].astype(np.uint16) * 257),
             "palette.png": Image.fromarray(rgb).convert("P"), "cmyk.jpg": Image.fromarray(rgb).convert("CMYK")}
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # stored sideways, shown upright
    rotated.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    for name, image in files.items():
        image.save(tmp_path / name)
    for name in [*files, "rotated.jpg"]:
        from_file = read_image(tmp_path / name)
        with Image.open(tmp_path / name) as opened:
            np.testing.assert_array_equal(as_rgb_uint8(opened), from_file)  # a Pillow image: as its file
            if opened.mode in ("RGBA", "I;16", "I"):
                np.testing.assert_array_equal(as_rgb_uint8(np.asarray(opened)), from_file)  # its pixels too
    np.testing.assert_array_equal(as_rgb_uint8(rgb / 255.0), rgb)  # float in [0, 1]
    np.testing.assert_array_equal(as_rgb_uint8(rgb.astype(np.float32)), rgb)  # float in [0, 255]
    assert as_rgb_uint8(np.ones((2, 2), bool)).max() == 255
    with pytest.raises(TypeError, match="not a single"):
        iter_items(rgb)
    with pytest.raises(ValueError, match="empty image"):
        as_rgb_uint8(np.zeros((0, 5, 3), np.uint8))
