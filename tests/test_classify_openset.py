"""Temperature scaling, the expected calibration error and the open-set scores, on synthetic logits and on the
session's fitted classifier (real crops, offline backbone)."""

from __future__ import annotations

import numpy as np
import pytest
from classify_testdata import UNSEEN_SOURCES, write_crops
from scipy.special import log_softmax, softmax
from sklearn.metrics import roc_auc_score

from classify.calibration import (
    calibration_report,
    ece_noise_floor,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_bins,
    temperature_interval,
)
from classify.openset import DEFAULT_SCORE, GRAPH_SCORES, class_means, score_table


def _overconfident(n: int = 600, classes: int = 5, temperature: float = 3.0, seed: int = 0):
    """Logits whose labels were drawn from ``softmax(logits / temperature)``: a model ``temperature`` times too sure."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, (n, classes))
    p = softmax(logits / temperature, axis=1)
    y = np.array([rng.choice(classes, p=row) for row in p])
    return logits, y


def test_temperature_scaling_lowers_nll_and_recovers_the_temperature():
    logits, y = _overconfident(temperature=3.0)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.2)  # the temperature the labels were drawn with
    assert nll(logits, y, t) < nll(logits, y, 1.0) - 0.1  # compared with no scaling, on the same data
    before, after = softmax(logits, axis=1), softmax(logits / t, axis=1)
    assert expected_calibration_error(after, y) < expected_calibration_error(before, y) / 2
    assert (after.argmax(1) == before.argmax(1)).all()  # the top class never changes
    report = calibration_report(logits, y, t, "val")
    assert report["nll_after"] < report["nll_before"] and report["bins"] == 15 and report["split"] == "val"
    well, y_well = _overconfident(temperature=1.0, seed=1)
    assert fit_temperature(well, y_well) == pytest.approx(1.0, rel=0.2)  # a calibrated model is left about alone
    assert fit_temperature(logits[:0], y[:0]) == 1.0


def test_ece_noise_floor_shrinks_with_the_number_of_samples():
    logits, _ = _overconfident(n=2000, temperature=1.0)
    proba = softmax(logits / 3.0, axis=1)
    small, large = ece_noise_floor(proba[:60]), ece_noise_floor(proba)
    assert large < small / 3  # about 1 / sqrt(n): 60 samples cannot show a small ECE, 2000 can
    assert ece_noise_floor(np.eye(3)[[0, 1, 2, 0]]) == 0.0  # certain and right: no noise


def test_temperature_interval_is_the_spread_of_refitting_on_resamples_and_covers_the_true_temperature():
    logits, y = _overconfident(n=64, temperature=3.0, seed=2)
    lo, hi = temperature_interval(logits, y, draws=100, seed=5)
    # the same resamples refitted one by one with fit_temperature (the grid search finds the same optimum)
    counts = np.random.default_rng(5).multinomial(len(y), np.full(len(y), 1 / len(y)), size=100)
    refits = [fit_temperature(np.repeat(logits, c, axis=0), np.repeat(y, c)) for c in counts]
    assert (lo, hi) == pytest.approx(tuple(np.exp(np.percentile(np.log(refits), [5, 95]))), rel=0.01)
    assert lo < fit_temperature(logits, y) < hi
    # a 90% interval from 64 samples holds the temperature the labels were drawn with in most of 20 independent sets
    covered = [lo_ <= 3.0 <= hi_ for lo_, hi_ in (temperature_interval(*_overconfident(n=64, seed=10 + i), draws=200)
                                                   for i in range(20))]
    assert sum(covered) >= 15
    big_lo, big_hi = temperature_interval(*_overconfident(n=2000, temperature=3.0, seed=3))
    assert big_hi - big_lo < (hi - lo) / 3  # about 1 / sqrt(n) narrower
    assert temperature_interval(logits[:0], y[:0]) is None
    # one wrong sample among many right: resamples without it have no finite optimum, so the interval reaches far down
    easy = np.eye(3)[np.arange(100) % 3] * 6.0
    labels = np.arange(100) % 3
    easy[0] = [0.0, 0.3, 0.0]  # the one wrong sample, barely
    lo_easy, hi_easy = temperature_interval(easy, labels)
    assert lo_easy < fit_temperature(easy, labels) / 10 and hi_easy >= fit_temperature(easy, labels)


def test_a_confidently_wrong_sample_is_not_capped_and_a_separable_set_keeps_t_1(caplog):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 100)
    logits = np.eye(3)[y] * rng.uniform(4, 8, (100, 1))  # every sample right with a margin of 4-8
    with caplog.at_level("WARNING", logger="classify.calibration"):
        assert fit_temperature(logits, y) == 1.0  # the NLL falls all the way to T -> 0: nothing to fit
    assert "cannot be fitted" in caplog.text and temperature_interval(logits, y) is None  # unbounded: no interval
    assert fit_temperature(logits, y, fallback=2.1) == 2.1  # recalibration keeps the model's own
    wrong = logits.copy()
    wrong[0] = np.roll(wrong[0], 1) * 8  # one sample wrong with a margin of 32-64

    def exact_nll(t: float) -> float:
        return float(-np.mean(log_softmax(wrong / t, axis=1)[np.arange(100), y]))

    # log_loss caps that sample at -log(eps) = 36 nats, so on its NLL T -> 0 (every probability 1) would look best
    t = fit_temperature(wrong, y)
    assert exact_nll(t) < exact_nll(0.1) / 10 and exact_nll(t) <= min(exact_nll(t * 0.9), exact_nll(t / 0.9))


def test_ece_by_hand():
    proba = np.array([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.55, 0.45]])
    y = np.array([0, 1, 0, 0])
    # bins of width 1/15: {0.95}, {0.9}: separate bins; {0.6}, {0.55}: separate bins (0.533-0.6, 0.6-0.667)
    expected = (abs(1 - 0.95) + abs(0 - 0.9) + abs(1 - 0.6) + abs(1 - 0.55)) / 4
    assert expected_calibration_error(proba, y) == pytest.approx(expected)
    assert expected_calibration_error(proba, y, bins=1) == pytest.approx(abs(0.75 - 0.75))
    r = reliability_bins(proba, y)
    assert r["count"].sum() == 4 and len(r["edges"]) == 16


def test_scores_in_numpy():
    logits = np.array([[2.0, 0.0, -1.0], [0.1, 0.2, 0.0]])
    feats = np.array([[1.0, 0.0], [1.0, 1.0]])
    means = class_means(np.array([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]]), np.array([0, 1, 2]), 3)
    s = score_table(logits, feats, means, temperature=2.0, train_features=np.array([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(s["max_softmax"], softmax(logits / 2.0, axis=1).max(1))
    np.testing.assert_allclose(s["max_logit"], [2.0, 0.2])
    np.testing.assert_allclose(s["energy"], np.log(np.exp(logits).sum(1)))
    np.testing.assert_allclose(s["class_mean_cosine"], [1.0, np.sqrt(0.5)])
    np.testing.assert_allclose(s["knn_cosine"], [0.0, np.sqrt(0.5)])  # 2 training features: the farther one


@pytest.fixture(scope="module")
def unseen_dir(classify_workdir):
    """Crops of classes the fitted model never saw (other scikit-image photographs)."""
    return write_crops(classify_workdir / "unseen", photos_per_class=3, crops_per_photo=2, seed=5, manifest=False,
                       sources=UNSEEN_SOURCES)


def test_the_model_open_set_score_ranks_unseen_classes_below_known_ones(fitted, unseen_dir):
    from classify import load_image_folder

    clf, _, test = fitted
    unseen = load_image_folder(unseen_dir, min_per_class=0)
    (_, known), (_, other) = clf.predict_scores(test.paths), clf.predict_scores(unseen.paths)
    y = np.r_[np.ones(len(known)), np.zeros(len(other))]
    auroc = roc_auc_score(y, np.r_[known, other])
    assert clf.model_.open_set_score == DEFAULT_SCORE and auroc >= 0.9, auroc
    # the graph computes what the numpy table computes from the model's logits and features
    logits, feats = clf.logits_and_features(unseen.paths)
    table = score_table(logits, feats, clf.model_.class_means, clf.temperature_)
    assert set(GRAPH_SCORES) <= set(table)
    np.testing.assert_allclose(table[DEFAULT_SCORE], other, atol=1e-5)
    np.testing.assert_allclose(softmax(logits / clf.temperature_, axis=1), clf.predict_proba(unseen.paths),
                               atol=1e-5)  # the probabilities are calibrated, in the graph
    # the threshold keeps most known crops and rejects most unseen ones here
    threshold = clf.open_set_threshold_
    assert np.mean(known >= threshold) > np.mean(other >= threshold)
    labels = clf.predict(unseen.paths)
    assert (labels[other < threshold] == "unknown").all() and (labels[other >= threshold] != "unknown").all()
    assert clf.calibration_["nll_after"] <= clf.calibration_["nll_before"]


def test_keep_threshold_keeps_at_least_the_share_and_sits_between_scores():
    from classify.calibration import keep_threshold

    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 20, 48, 333):
        scores = rng.normal(size=n)
        for keep in (0.5, 0.9, 0.95, 1.0):
            t = keep_threshold(scores, keep)
            assert np.mean(scores >= t) >= keep - 1e-12
            assert np.sum(scores < t) == min(int(np.floor((1 - keep) * n + 1e-9)), n - 1)
            assert np.min(np.abs(scores - t)) > 1e-7  # no validation score within rounding of it
    tied = np.r_[0.0, np.ones(9)]  # rejecting 20% would cut through the ones: it keeps all of them
    assert keep_threshold(tied, 0.8) == pytest.approx(0.5)


def test_an_uncertain_temperature_is_reported_with_its_interval(caplog):
    from types import SimpleNamespace

    from classify.openset import WIDE_TEMPERATURE, fit_calibration

    def fake_task(score=DEFAULT_SCORE, unknown_below=None):
        return SimpleNamespace(calibration=SimpleNamespace(temperature=SimpleNamespace(assign=lambda t: None)),
                               metadata={}, open_set_score=score, open_set_threshold=None, unknown_below=unknown_below)

    # 40 crops leave T wide, 4000 pin it down; a wide T is a warning only where the answers use the probabilities
    for n, task, wide, warned in ((40, fake_task(), True, False), (40, fake_task(unknown_below=0.5), True, True),
                                  (40, fake_task("max_softmax"), True, True), (4000, fake_task(), False, False)):
        logits, y = _overconfident(n=n, temperature=3.0, seed=n)
        caplog.clear()
        with caplog.at_level("INFO", logger="classify.openset"):
            fit = fit_calibration(task, logits, None, y, None, "val")
        lo, hi = fit.report["temperature_interval"]
        assert lo <= fit.temperature <= hi and (hi > WIDE_TEMPERATURE * lo) == wide
        uncertain = [r for r in caplog.records if "is uncertain" in r.getMessage()]
        assert len(uncertain) == wide and any(r.levelname == "WARNING" for r in uncertain) == warned
