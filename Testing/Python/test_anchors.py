"""The signed change scores, the subject-agnostic anchors and the statistics over subjects, on worlds whose answers
are known: one fixed disease pattern (the atlas is the truth) and random patterns (the atlas is no change)."""

from __future__ import annotations

import numpy as np
import pytest

from ControlCGLib.evaluation.anchors import Anchors, TrueChange
from ControlCGLib.evaluation.metrics import bootstrap_ci, change_scores, closer_to_own
from ControlCGLib.evaluation.report import paired_comparisons, per_subject

SHAPE = (8, 8, 8)


def _subject(i: int, change: np.ndarray, direction: str = "CN->AD") -> TrueChange:
    unit = np.random.default_rng(100 + i).uniform(0.3, 0.7, SHAPE)
    return TrueChange(f"s{i}", direction, unit, np.ones(SHAPE), change)


def test_change_scores_read_the_signed_change():
    rng = np.random.default_rng(0)
    unit, t = rng.uniform(0.3, 0.7, SHAPE), rng.normal(0, 0.1, SHAPE)
    mask = np.ones(SHAPE)
    truth = unit + t
    exact = change_scores(truth, truth, unit, mask)
    assert exact["change_r2"] == pytest.approx(1) and exact["change_r"] == pytest.approx(1)
    assert exact["sign_agreement"] == 1
    nothing = change_scores(unit, truth, unit, mask)
    assert nothing["change_r2"] == 0 and nothing["change_r2_fit"] == 0 and nothing["change_r"] is None
    half = change_scores(unit + 0.5 * t, truth, unit, mask)  # the right pattern at half strength
    assert half["change_r2"] == pytest.approx(0.75) and half["change_r2_fit"] == pytest.approx(1)
    wrong_way = change_scores(unit - t, truth, unit, mask)
    assert wrong_way["change_r2"] == pytest.approx(-3) and wrong_way["sign_agreement"] == 0
    assert wrong_way["change_r"] == pytest.approx(-1)
    assert change_scores(truth, unit, unit, mask)["change_r2"] is None  # no true change: undefined, not infinite


def test_one_fixed_pattern_makes_the_atlas_the_oracle():
    pattern = np.random.default_rng(1).normal(0, 0.05, SHAPE)
    subjects = [_subject(i, pattern) for i in range(5)]
    anchors = Anchors(subjects, subjects)
    for s in subjects:
        atlas = anchors.atlas(s.subject, s.direction)
        assert np.allclose(atlas, s.change)
        truth = s.unit + s.change
        assert change_scores(s.shown(atlas), truth, s.unit, s.mask)["change_r2"] == pytest.approx(1)
        assert change_scores(s.shown(anchors.other(s.subject)), truth, s.unit, s.mask)["change_r2"] == pytest.approx(1)


def test_random_patterns_make_the_atlas_no_better_than_no_change():
    rng = np.random.default_rng(2)
    pool = [_subject(i, rng.normal(0, 0.05, SHAPE)) for i in range(200)]
    evaluated = [_subject(1000 + i, rng.normal(0, 0.05, SHAPE)) for i in range(6)]
    anchors = Anchors(pool, evaluated)
    for s in evaluated:
        truth = s.unit + s.change
        atlas_r2 = change_scores(s.shown(anchors.atlas(s.subject, s.direction)), truth, s.unit, s.mask)["change_r2"]
        other = anchors.other(s.subject)
        other_r2 = change_scores(s.shown(other), truth, s.unit, s.mask)["change_r2"]
        assert abs(atlas_r2) < 0.05  # the mean of 200 independent patterns: almost no change
        assert other_r2 == pytest.approx(-1, abs=0.25)  # another subject's change: twice the error of none
        assert closer_to_own(s.change, s.change, other, s.mask)  # the truth passes the swap test
        assert not closer_to_own(other, s.change, other, s.mask)


def test_the_atlas_leaves_the_subject_out_and_keeps_directions_apart():
    a, b = np.full(SHAPE, 0.1), np.full(SHAPE, -0.1)
    pool = [_subject(0, a), _subject(1, a * 3), _subject(2, b, "AD->CN")]
    anchors = Anchors(pool, pool)
    assert np.allclose(anchors.atlas("s0", "CN->AD"), a * 3)  # itself left out
    assert np.allclose(anchors.atlas("s9", "CN->AD"), a * 2)  # not in the pool: the mean of both
    assert anchors.atlas("s2", "AD->CN") is None  # the only one of its direction
    assert anchors.other("s2") is None and np.allclose(anchors.other("s0"), a * 3)
    assert anchors.pool_size("CN->AD") == 2


def test_bootstrap_intervals_cover_a_known_mean():
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(100):
        lo, hi = bootstrap_ci(rng.normal(2.0, 1.0, 40), n=500, seed=int(rng.integers(1 << 30)))
        covered += lo <= 2.0 <= hi
    assert 88 <= covered <= 99  # a 95 % interval: about 95 of 100
    assert bootstrap_ci([1.0]) is None and bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)


def test_subjects_not_rows_are_the_sample():
    rows = [
        {"subject": s, "seed": seed, "method": m, "w": 4.0, "change_r2": v, "change_r2_fit": v, "change_r": v,
         "ssim_true_cf": v}
        for s, base in (("a", 0.5), ("b", 0.1))
        for seed in (0, 1, 2)
        for m, v in (("ours", base + 0.01 * seed), ("atlas", 0.3))
    ]  # fmt: skip
    ours = per_subject([r for r in rows if r["method"] == "ours"], "change_r2")
    assert ours == {"a": pytest.approx(0.51), "b": pytest.approx(0.11)}
    compared = paired_comparisons(rows, 4.0)["atlas"]["change_r2"]
    assert compared["subjects"] == 2 and compared["ours_higher"] == 0.5
    assert compared["mean_difference"] == pytest.approx((0.21 - 0.19) / 2)


def test_calibration_error_is_zero_when_confidence_is_accuracy_and_large_when_overconfident():
    from ControlCGLib.evaluation.report import calibration

    # 10 inputs at confidence 0.8, 8 right: calibrated
    honest = [{"p_target_input": 0.2, "input_correct": i < 8} for i in range(10)]
    assert calibration(honest)["ece"] == pytest.approx(0.0)
    # confidence 0.99, half right: overconfident by 0.49
    proud = [{"p_target_input": 0.01, "input_correct": i % 2 == 0} for i in range(10)]
    assert calibration(proud)["ece"] == pytest.approx(0.49)
    assert calibration([])["ece"] is None


def test_best_w_is_the_one_whose_change_matches_the_truth_best():
    from ControlCGLib.evaluation.report import best_w

    sweep = [
        {"w": w, "by_direction": {"AD->CN": {"change_r2_pooled": r2a}, "CN->AD": {"change_r2_pooled": r2b}}}
        for w, r2a, r2b in ((0.0, 0.0, 0.0), (2.0, 0.3, 0.5), (4.0, 0.4, 0.1), (6.0, -0.2, None))
    ]
    assert best_w(sweep) == {
        "AD->CN": {"w": 4.0, "change_r2_pooled": 0.4},
        "CN->AD": {"w": 2.0, "change_r2_pooled": 0.5},
    }


def test_a_subject_with_several_scans_is_left_out_whole_and_only_from_its_direction():
    a = np.full(SHAPE, 0.1)
    scan_1, scan_2 = _subject(0, a), _subject(0, a * 5)  # two scans of subject s0
    later = _subject(0, -a * 7, "AD->CN")  # s0 again, in the other direction
    pool = [scan_1, scan_2, _subject(1, a * 3), later, _subject(2, -a, "AD->CN")]
    anchors = Anchors(pool, [])
    assert np.allclose(anchors.atlas("s0", "CN->AD"), a * 3)  # both of its CN->AD scans left out
    assert np.allclose(anchors.atlas("s1", "CN->AD"), a * 3)  # the mean of s0's two scans
    assert np.allclose(anchors.atlas("s0", "AD->CN"), -a)  # its AD->CN scan left out of that direction only
