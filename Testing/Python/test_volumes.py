"""The evaluation's volume ruler (evaluation/volumes.py) and the subject selection that balances directions within each
anatomy (evaluation/subjects.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ControlCGLib.data.anatomies import REGIONS
from ControlCGLib.evaluation.subjects import SimulatedSubject, balanced
from ControlCGLib.evaluation.volumes import VolumeRuler

CSF, GREY, WHITE = 0.2, 0.5, 0.8


def _brain():
    labels = np.full((20, 20, 20), REGIONS["white matter"], np.uint8)
    labels[8:12, 8:12, 8:12] = REGIONS["ventricles"]  # 64 voxels
    labels[3:6, 3:6, 3:6] = REGIONS["hippocampi"]
    labels[:, :, :2] = REGIONS["temporal cortex"]
    labels[:, :, 18:] = REGIONS["parietal cortex"]
    image = np.select(
        [labels == REGIONS["ventricles"], np.isin(labels, [REGIONS["hippocampi"], 3, 4])], [CSF, GREY], WHITE
    ).astype(np.float32)
    return image, labels, np.ones(labels.shape, bool)


def test_the_ruler_reads_nothing_for_the_input_itself_and_a_ventricle_growth_at_its_size():
    image, labels, mask = _brain()
    ruler = VolumeRuler(image, labels, mask)
    assert (ruler.csf_level, ruler.grey_level) == (pytest.approx(CSF), pytest.approx(GREY))
    before = ruler.volumes(image)
    assert all(v == pytest.approx(0.0) for v in ruler.change_percent(image, before).values())
    grown = image.copy()
    grown[12, 8:12, 8:12] = CSF  # one more slab of 16 voxels of CSF beside the 64: +25 %
    change = ruler.change_percent(grown, before)
    assert change["ventricles"] == pytest.approx(25.0)
    assert change["hippocampi"] == pytest.approx(0.0) and change["brain"] < 0


def test_a_shrinking_hippocampus_reads_as_tissue_lost_there_and_partial_volume_as_a_fraction():
    image, labels, mask = _brain()
    ruler = VolumeRuler(image, labels, mask)
    before = ruler.volumes(image)
    shrunk = image.copy()
    shrunk[3, 3:6, 3:6] = CSF  # its outer face becomes CSF
    half = image.copy()
    half[3, 3:6, 3:6] = (CSF + GREY) / 2  # half of that face's tissue: half the loss
    lost, lost_half = (
        ruler.change_percent(shrunk, before)["hippocampi"],
        ruler.change_percent(half, before)["hippocampi"],
    )
    assert lost < 0 and lost_half == pytest.approx(lost / 2)
    assert ruler.change_percent(shrunk, before)["ventricles"] == pytest.approx(0.0)


def test_the_ruler_refuses_labels_without_ventricles_and_an_image_that_is_not_a_t1():
    image, labels, mask = _brain()
    with pytest.raises(ValueError, match="no ventricles"):
        VolumeRuler(image, np.where(labels == REGIONS["ventricles"], REGIONS["white matter"], labels), mask)
    with pytest.raises(ValueError, match="not brighter"):
        VolumeRuler(1.0 - image, labels, mask)


def test_balanced_takes_both_directions_within_each_anatomy():
    def subject(i, anatomy, label):
        return SimulatedSubject(f"s{i}", label, "AD" if label == "CN" else "CN", Path("x"), Path("y"), anatomy)

    # an anatomy whose first subjects are all one class, and a second anatomy after it
    pool = [subject(i, "cat12", "CN") for i in range(6)] + [subject(6 + i, "cat12", "AD") for i in range(2)]
    pool += [subject(8 + i, "cit168", label) for i, label in enumerate(["AD", "AD", "AD", "CN", "CN", "CN"])]
    chosen = balanced(pool, 8)
    cells = {
        (a, c): sum(s.anatomy == a and s.label == c for s in chosen)
        for a in ("cat12", "cit168")
        for c in "CN AD".split()
    }
    assert cells == {("cat12", "CN"): 2, ("cat12", "AD"): 2, ("cit168", "CN"): 2, ("cit168", "AD"): 2}
    assert [s.subject for s in chosen] == sorted((s.subject for s in chosen), key=lambda x: int(x[1:]))  # list order
    assert len(balanced(pool, 13)) == 13 and balanced(pool, None) == pool  # a short cell leaves its turn to others


def test_the_report_reads_each_methods_volume_error_per_subject_and_draws_the_reliability_diagram(tmp_path):
    from ControlCGLib.evaluation.report import markdown, summarise_methods, write_report

    rows = []
    for subject, (true, shown) in {"a": (40.0, 30.0), "b": (20.0, 20.0)}.items():
        for seed in (0, 1):
            for method, dv in (("ours", shown), ("identity", 0.0)):
                rows.append(
                    {
                        "subject": subject,
                        "anatomy": "cat12",
                        "source": "CN",
                        "target": "AD",
                        "method": method,
                        "w": 4.0,
                        "seed": seed,
                        "input_correct": True,
                        "p_target_input": 0.2,
                        "flipped": True,
                        "features": [0.0, 1.0],
                        "dv_ventricles": dv,
                        "dv_true_ventricles": true,
                        "dv_error_ventricles": abs(dv - true),
                    }  # fmt: skip
                )
    summary = summarise_methods(rows, [], 4.0)
    ours = summary["methods"]["ours"]["by_direction"]["CN->AD"]
    assert ours["volume_error_ventricles"] == pytest.approx(5.0)  # subjects a (10) and b (0)
    assert ours["volume_change_ventricles"] == pytest.approx(25.0) and ours["volume_change_true_ventricles"] == 30.0
    assert summary["methods"]["identity"]["by_direction"]["CN->AD"]["volume_error_ventricles"] == pytest.approx(30.0)
    assert "| ours | CN->AD | – | 5.0 [0.0, 10.0] (+25.0 / +30.0) |" in markdown(summary)
    write_report(tmp_path, summary, rows)
    assert (tmp_path / "reliability.png").stat().st_size > 10_000
