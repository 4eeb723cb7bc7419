"""Detector: the offline COCO model on real photos, and the TF Hub adapter on SavedModels built here."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from skimage import data

from detectcrop import Detector, ModelUnavailableError, boxes, zoo


def _best(dets, name: str):
    mask = dets.class_names == name
    assert mask.any(), f"no {name} among {sorted(set(dets.class_names))}"
    i = int(np.argmax(np.where(mask, dets.scores, -1)))
    return dets.xyxy[i], float(dets.scores[i])


def test_detector_finds_the_astronaut(detector):
    image = data.astronaut()  # 512x512; the astronaut fills the left two thirds, head to bottom edge
    dets = detector.detect(image)
    box, score = _best(dets, "person")
    assert score >= 0.5
    expected = np.array([[0, 0, 380, 512]], np.float64)
    assert boxes.iou(box[None], expected)[0, 0] > 0.7, box


def test_detector_finds_the_cup(detector):
    image = data.coffee()  # 400x600; the cup and saucer sit left of centre in the upper two thirds
    dets = detector.detect(image)
    box, score = _best(dets, "cup")
    assert score >= 0.3
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    assert 200 < cx < 380 and 60 < cy < 220, box
    assert dets.class_ids[dets.class_names == "cup"][0] == 47  # COCO 90-id map, not the 80-class index


def test_detector_rejects_non_rgb_uint8(detector):
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((10, 10, 3), np.float32))


class _SignatureOnlyDetector(tf.Module):
    """A tiny detector with the TF Hub outputs: one 'clock' box around the bright pixels, plus padding rows."""

    def _outputs(self, images):
        bright = tf.reduce_max(images[0], axis=-1) > 128
        h, w = tf.cast(tf.shape(bright)[0], tf.float32), tf.cast(tf.shape(bright)[1], tf.float32)
        rows = tf.cast(tf.where(tf.reduce_any(bright, axis=1))[:, 0], tf.float32)
        cols = tf.cast(tf.where(tf.reduce_any(bright, axis=0))[:, 0], tf.float32)
        box = tf.stack([tf.reduce_min(rows) / h, tf.reduce_min(cols) / w,
                        (tf.reduce_max(rows) + 1) / h, (tf.reduce_max(cols) + 1) / w])
        boxes = tf.stack([box, [0.0, 0.0, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2]])[None]
        return {
            "detection_boxes": boxes,
            "detection_scores": tf.constant([[0.9, 0.2, 0.99]]),  # the third row is padding (num_detections=2)
            "detection_classes": tf.constant([[85.0, 1.0, 3.0]]),
            "num_detections": tf.constant([2.0]),
        }

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")])
    def serve(self, input_tensor):
        return self._outputs(input_tensor)


class _BrightBoxDetector(_SignatureOnlyDetector):
    """The same, callable like TF2 Object Detection API exports."""

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
    def __call__(self, images):
        return self._outputs(images)


def _bright_box_image() -> np.ndarray:
    image = np.zeros((300, 500, 3), np.uint8)  # non-square: a swapped axis would show
    image[60:180, 100:400] = 255
    return image


def test_hub_adapter_returns_pixel_boxes_for_a_local_savedmodel(tmp_path):
    path = tmp_path / "tiny_detector"
    tf.saved_model.save(_BrightBoxDetector(), str(path))
    detector = Detector.from_preset(path, min_score=0.1)
    dets = detector.detect(_bright_box_image())
    assert len(dets) == 2  # the padding row beyond num_detections is dropped
    np.testing.assert_allclose(dets.xyxy[0], [100, 60, 400, 180], atol=1e-3)
    assert dets.class_names[0] == "clock" and dets.class_ids[0] == 85
    np.testing.assert_allclose(dets.xyxy[1], [0, 0, 250, 150], atol=1e-3)
    assert len(detector.detect(_bright_box_image(), min_score=0.5)) == 1


def test_hub_adapter_uses_serving_signature_when_not_callable(tmp_path):
    module = _SignatureOnlyDetector()
    path = tmp_path / "signature_only"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    dets = Detector.from_preset(path, min_score=0.5).detect(_bright_box_image())
    np.testing.assert_allclose(dets.xyxy, [[100, 60, 400, 180]], atol=1e-3)


def test_unreachable_online_model_names_the_offline_preset():
    with pytest.raises(ModelUnavailableError, match=zoo.OFFLINE_DETECTOR):
        Detector.from_preset("https://detector.invalid/models/faster_rcnn/1")


@pytest.mark.unit  # names a backbone preset only to see it refused before anything loads
def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="faster_rcnn_resnet50_v1_1024x1024"):
        Detector.from_preset("no_such_detector")
    with pytest.raises(ValueError, match="backbone preset"):
        Detector.from_preset("densenet121")


@pytest.mark.large
def test_default_online_detector_finds_the_astronaut():
    """Downloads Faster R-CNN ResNet50 1024x1024 from TF Hub (needs the network; run with --run-large)."""
    dets = Detector.from_preset().detect(data.astronaut())
    assert _best(dets, "person")[1] >= 0.5


def test_huge_images_are_shrunk_before_the_model_and_boxes_map_back():
    """The model sees at most MAX_INPUT_SIDE pixels a side; normalised boxes come back in full-size pixels."""
    from detectcrop.detector import MAX_INPUT_SIDE, Detector

    seen = []

    def model(images):
        seen.append(tuple(images.shape))
        return {"num_detections": np.array([1.0]), "detection_boxes": np.array([[[0.25, 0.5, 0.75, 1.0]]]),
                "detection_scores": np.array([[0.9]]), "detection_classes": np.array([[85.0]])}

    det = Detector(model, nms_iou=None)
    for shape in [(300, 400, 3), (2000, 10000, 3)]:
        out = det.detect(np.zeros(shape, np.uint8))
        h, w = shape[:2]
        np.testing.assert_allclose(out.xyxy, [[0.5 * w, 0.25 * h, w, 0.75 * h]], rtol=1e-6)
    assert seen[0] == (1, 300, 400, 3)
    assert seen[1] == (1, round(2000 * MAX_INPUT_SIDE / 10000), MAX_INPUT_SIDE, 3)


def test_build_crops_runs_a_detector_built_from_a_model_object_on_the_local_engine(tmp_path):
    from PIL import Image

    from detectcrop.dataset import IMAGES_CSV, build_crops
    from detectcrop.io import read_csv

    photos = tmp_path / "photos" / "a"
    photos.mkdir(parents=True)
    Image.fromarray(_bright_box_image()).save(photos / "p.png")
    detector = Detector(_BrightBoxDetector(), min_score=0.1)  # "custom": no config to rebuild it on Ray actors
    summary = build_crops(tmp_path / "photos", tmp_path / "crops", detector)
    assert summary.n_ok == 1 and summary.n_crops == 1
    assert read_csv(tmp_path / "crops" / IMAGES_CSV)[1][0][:3] == ["a/p.png", "ok", "1"]
    with pytest.raises(ValueError, match="has no config"):  # the Ray engine says why it cannot take it
        build_crops(tmp_path / "photos", tmp_path / "crops2", detector, engine="ray")
    assert not any(p.name != ".detectcrop.lock" for p in (tmp_path / "crops2").iterdir())  # before writing anything
