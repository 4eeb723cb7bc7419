from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin
from skimage import data

from detectcrop import Detections
from detectcrop import io as dio
from detectcrop.crops import CropPolicy, crop_boxes, crop_image, encode_jpeg, save_jpeg, select_crops

SHAPE = (100, 200)  # height, width


def test_policy_validation():
    with pytest.raises(ValueError):
        CropPolicy(pad=-0.1)
    with pytest.raises(ValueError):
        CropPolicy(min_size=-1)
    with pytest.raises(ValueError):
        CropPolicy(max_crops=0)
    assert CropPolicy().to_dict() == {"pad": 0.1, "square": False, "min_size": 32, "max_crops": None}


def test_min_size_and_top_k_by_score():
    xyxy = np.array([[0, 0, 40, 40], [50, 10, 60, 90], [100, 20, 150, 80], [10, 50, 50, 95]])
    scores = np.array([0.5, 0.99, 0.8, 0.7])
    boxes, idx = crop_boxes(xyxy, scores, SHAPE, CropPolicy(pad=0, min_size=20))
    assert idx.tolist() == [2, 3, 0]  # the 10-px-wide box is dropped; best score first
    np.testing.assert_array_equal(boxes, xyxy[[2, 3, 0]])
    boxes, idx = crop_boxes(xyxy, scores, SHAPE, CropPolicy(pad=0, min_size=0, max_crops=2))
    assert idx.tolist() == [1, 2]


def test_pad_is_a_fraction_of_the_box_and_clipped():
    boxes, _ = crop_boxes([[20, 20, 60, 40]], [0.9], SHAPE, CropPolicy(pad=0.25, min_size=0))
    np.testing.assert_array_equal(boxes, [[10, 15, 70, 45]])
    boxes, _ = crop_boxes([[0, 0, 40, 40]], [0.9], SHAPE, CropPolicy(pad=0.5, min_size=0))
    np.testing.assert_array_equal(boxes, [[0, 0, 60, 60]])


def test_square_crops_stay_square_inside_the_image():
    boxes, _ = crop_boxes([[180, 10, 196, 50]], [0.9], SHAPE, CropPolicy(pad=0, square=True, min_size=0))
    x1, y1, x2, y2 = boxes[0]
    assert (x2 - x1, y2 - y1) == (40, 40) and x2 == 200  # moved left to fit
    # larger than the image's height: clipped to the image
    boxes, _ = crop_boxes([[50, 0, 170, 20]], [0.9], SHAPE, CropPolicy(pad=0, square=True, min_size=0))
    np.testing.assert_array_equal(boxes, [[50, 0, 170, 100]])


def test_degenerate_boxes_never_become_empty_crops():
    boxes, idx = crop_boxes([[5, 5, 5, 30], [250, 10, 300, 50]], [0.9, 0.8], SHAPE, CropPolicy(pad=0, min_size=0))
    assert len(boxes) == 0 and len(idx) == 0


def test_select_crops_on_detections():
    dets = Detections([[0, 0, 50, 50], [100, 10, 180, 90]], [0.4, 0.9], [85, 85])
    kept, boxes = select_crops(dets, SHAPE, CropPolicy(pad=0, min_size=0))
    assert kept.scores.tolist() == pytest.approx([0.9, 0.4])
    np.testing.assert_array_equal(boxes[0], [100, 10, 180, 90])


def test_crop_image_is_a_contiguous_copy():
    img = np.arange(100 * 200 * 3, dtype=np.uint8).reshape(100, 200, 3)
    crop = crop_image(img, np.array([10, 20, 30, 60]))
    assert crop.shape == (40, 20, 3) and crop.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(crop, img[20:60, 10:30])
    crop[:] = 0
    assert img[20, 10].any()


def test_jpeg_is_444_high_quality_true_colour(tmp_path):
    img = np.ascontiguousarray(data.astronaut()[100:228, 100:228])
    img[:16, :16] = (255, 0, 0)  # saturated red: chroma subsampling or an RGB/BGR swap would show here
    path = save_jpeg(tmp_path / "a" / "c.jpg", img)
    with Image.open(path) as jpg:
        assert jpg.format == "JPEG" and jpg.mode == "RGB"
        assert JpegImagePlugin.get_sampling(jpg) == 0  # 4:4:4
        back = np.asarray(jpg)
    assert np.abs(back.astype(int) - img).mean() < 2.5
    assert back[4:12, 4:12, 0].min() > 240 and back[4:12, 4:12, 1:].max() < 15
    assert encode_jpeg(img) == path.read_bytes()  # deterministic bytes
    q95 = io.BytesIO()
    Image.fromarray(img).save(q95, "JPEG", quality=95, subsampling=0)
    assert q95.getvalue() == path.read_bytes()
    with pytest.raises(ValueError):
        encode_jpeg(img[..., 0])


def test_atomic_write_leaves_old_file_or_new_file_never_half(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"
    dio.atomic_write_bytes(target, b"old")

    def broken_replace(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk went away"):
        dio.atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]  # no temporary left behind
    dio.atomic_write_text(target, "néw")
    assert target.read_text(encoding="utf-8") == "néw"
    (tmp_path / ".y.jpg.abc.tmp").write_bytes(b"half")
    assert dio.remove_stale_temporaries(tmp_path) == 1


def test_csv_manifest_appends_whole_rows_and_repairs_a_torn_line(tmp_path):
    m = dio.CsvManifest(tmp_path / "m.csv", ["a", "b"]).open()
    m.append([["1", "x, with comma"], ["2", "ü"]])
    with open(m.path, "ab") as f:
        f.write(b"3,half")  # a crash in the middle of a row
    m2 = dio.CsvManifest(tmp_path / "m.csv", ["a", "b"]).open()
    assert m2.rows() == [{"a": "1", "b": "x, with comma"}, {"a": "2", "b": "ü"}]
    m2.append([["3", "whole"]])
    assert m2.rows()[-1] == {"a": "3", "b": "whole"}
    with pytest.raises(ValueError, match="columns"):
        dio.CsvManifest(tmp_path / "m.csv", ["a", "c"]).open()
    m2.rewrite([["9", "z"]])
    assert m2.path.read_text(encoding="utf-8") == "a,b\n9,z\n"
