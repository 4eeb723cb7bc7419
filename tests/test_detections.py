from __future__ import annotations

import numpy as np
import pytest

from detectcrop import Detections


@pytest.fixture
def dets() -> Detections:
    return Detections(
        xyxy=[[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 150, 90], [0, 0, 10, 10]],
        scores=[0.6, 0.9, 0.5, 0.7],
        class_ids=[85, 85, 1, 44],
        data={"tag": np.array(["a", "b", "c", "d"])},
    )


def test_validation():
    with pytest.raises(ValueError, match="disagree in length"):
        Detections([[0, 0, 1, 1]], [0.5, 0.6], [1])
    with pytest.raises(ValueError, match=r"data\['x'\]"):
        Detections([[0, 0, 1, 1]], [0.5], [1], {"x": np.zeros(2)})
    with pytest.raises(ValueError, match="NaN"):
        Detections([[0, 0, np.nan, 1]], [0.5], [1])
    e = Detections.empty()
    assert len(e) == 0 and e.xyxy.shape == (0, 4) and len(e.by_category("clock")) == 0


def test_indexing_keeps_fields_aligned(dets):
    sub = dets[dets.scores > 0.65]
    assert sub.data["tag"].tolist() == ["b", "d"]
    assert sub.class_ids.tolist() == [85, 44]
    one = dets[2]
    assert len(one) == 1 and one.class_names.tolist() == ["person"]
    assert dets[1:3].data["tag"].tolist() == ["b", "c"]
    assert dets[np.array([3, 0])].scores.tolist() == pytest.approx([0.7, 0.6])


def test_filters_by_category_name_or_id(dets):
    assert dets.by_category("clock").data["tag"].tolist() == ["a", "b"]
    assert dets.by_category(85).data["tag"].tolist() == ["a", "b"]
    assert dets.by_category(["person", 44]).data["tag"].tolist() == ["c", "d"]
    with pytest.raises(ValueError, match=r"valid names:.*clock"):
        dets.by_category("watch")


def test_filters_by_score_and_size(dets):
    assert dets.by_score(0.7).data["tag"].tolist() == ["b", "d"]
    assert dets.by_size(min_size=20).data["tag"].tolist() == ["c"]  # shorter side 40
    assert dets.by_size(max_size=50).data["tag"].tolist() == ["a", "b", "d"]
    assert dets.by_size(min_area=1000).data["tag"].tolist() == ["c"]
    assert dets.filter(category="clock", min_score=0.7).data["tag"].tolist() == ["b"]


def test_class_aware_nms(dets):
    kept = dets.nms(0.5)
    # "a" overlaps "b" (same class, lower score) -> gone; "d" overlaps too but is another class
    assert kept.data["tag"].tolist() == ["b", "d", "c"]
    assert dets.nms(0.5, class_agnostic=True).data["tag"].tolist() == ["b", "c"]


def test_conversions(dets):
    np.testing.assert_allclose(dets.xywh[2], [50, 50, 100, 40])
    np.testing.assert_allclose(dets.normalized((100, 200))[2], [0.25, 0.5, 0.75, 0.9])
    back = Detections.from_normalized(dets.normalized((100, 200)), dets.scores, dets.class_ids, (100, 200))
    np.testing.assert_allclose(back.xyxy, dets.xyxy, atol=1e-4)
    again = Detections.from_xywh(dets.xywh, dets.scores, dets.class_ids)
    np.testing.assert_allclose(again.xyxy, dets.xyxy)
    np.testing.assert_allclose(dets.area, [100, 100, 4000, 100])
    np.testing.assert_allclose(dets.shift(5, 10).xyxy[0], [5, 10, 15, 20])
    np.testing.assert_allclose(dets.scale(2, 3).xyxy[2], [100, 150, 300, 270])


def test_sort_top_k_and_concatenate(dets):
    assert dets.top_k(2).data["tag"].tolist() == ["b", "d"]
    assert len(dets.top_k(None)) == 4
    both = Detections.concatenate([dets[:1], dets[3:]])
    assert both.data["tag"].tolist() == ["a", "d"]
    assert len(Detections.concatenate([])) == 0
    with pytest.raises(ValueError, match="data keys"):
        Detections.concatenate([dets, Detections.empty()])


def test_to_coco(dets):
    anns = dets[:3].to_coco(image_id=7, start_id=10)
    assert anns[2] == {
        "id": 12, "image_id": 7, "category_id": 1, "bbox": [50.0, 50.0, 100.0, 40.0], "area": 4000.0,
        "score": pytest.approx(0.5), "iscrowd": 0,
    }  # fmt: skip
    assert [a["id"] for a in anns] == [10, 11, 12]
