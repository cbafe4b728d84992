"""The evaluation report: summary.json, markdown tables shaped like the paper's Tables 1-3, the trade-off plot.

Input: the rows of :func:`~ControlCGLib.evaluation.measure_subject` (every method, subject and seed) and the real
scans' classifier features. Means are over subjects and seeds; "sd" is the spread of the per-seed means (how much a
different random seed moves the figure), so it needs two seeds or more. Subjects, not rows, are the sample: "_ci"
entries are bootstrap intervals over subjects (each subject's mean over its seeds), a subject flips when most of its
seeds flip, and ours is compared with every other method subject by subject.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .metrics import bootstrap_ci, kid
from .volumes import VOLUME_REGIONS

# summary key <- row key
METRICS = {
    "ssim": "ssim",
    "mse": "mse",
    "flip_rate": "flipped",
    "flip_rate_judge": "flipped_judge",
    "p_target": "p_target",
    "ssim_true_cf": "ssim_true_cf",
    "mse_true_cf": "mse_true_cf",
    "saliency_auroc": "saliency_auroc",
    "saliency_dice": "saliency_dice",
    "composition_mse": "composition_mse",
    "reversibility_mse": "reversibility_mse",
    "change_r2": "change_r2",
    "change_r2_fit": "change_r2_fit",
    "change_r": "change_r",
    "sign_agreement": "sign_agreement",
    "swap_rate": "swap_own_closer",
    "seconds": "seconds",
}
# metrics with a bootstrap interval over subjects, and those ours is compared on subject by subject
SUBJECT_CI = ("ssim_true_cf", "change_r2", "change_r2_fit", "change_r", "sign_agreement", "saliency_auroc")
PAIRED = ("change_r2", "change_r2_fit", "change_r", "ssim_true_cf")
KIDS = ("rCN2gAD", "rAD2gAD", "rCN2gCN", "rAD2gCN")
#: row-key suffixes of the regional volume change (measures.py, volumes.py)
VOLUME_KEYS = tuple(region.replace(" ", "_") for region in VOLUME_REGIONS)


def _mean_sd(rows: Sequence[dict], key: str) -> tuple[float | None, float | None]:
    values = [(r["seed"], float(r[key])) for r in rows if r.get(key) is not None]
    if not values:
        return None, None
    per_seed: dict[int, list[float]] = {}
    for seed, v in values:
        per_seed.setdefault(seed, []).append(v)
    means = [float(np.mean(v)) for v in per_seed.values()]
    mean = float(np.mean([v for _, v in values]))
    return mean, float(np.std(means, ddof=1)) if len(means) > 1 else None


def _kid_or_none(a: list, b: list) -> float | None:
    return kid(a, b) if len(a) >= 2 and len(b) >= 2 else None


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95 % Wilson score interval of a rate (better than the normal one near 0 and 1 and for few trials)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(float(centre - half), 4), round(float(centre + half), 4))


def _rate_ci(rows: Sequence[dict], key: str) -> tuple[float, float] | None:
    values = [bool(r[key]) for r in rows if r.get(key) is not None]
    return wilson(sum(values), len(values))


def per_subject(rows: Sequence[dict], key: str) -> dict[str, float]:
    """Each subject's mean of ``key`` over its seeds (subjects without a value are left out)."""
    values: dict[str, list[float]] = {}
    for r in rows:
        if r.get(key) is not None:
            values.setdefault(r["subject"], []).append(float(r[key]))
    return {s: float(np.mean(v)) for s, v in values.items()}


def _subject_statistics(rows: Sequence[dict]) -> dict:
    """R² pooled over rows, bootstrap intervals over subjects, and the flip rate of subjects (most seeds flip)."""
    out: dict = {}
    sse = [r["change_sse"] for r in rows if r.get("change_sse") is not None]
    sst = [r["change_sst"] for r in rows if r.get("change_sst") is not None]
    out["change_r2_pooled"] = 1.0 - float(np.sum(sse)) / float(np.sum(sst)) if sst and np.sum(sst) > 0 else None
    for key in SUBJECT_CI:
        out[f"{key}_ci"] = bootstrap_ci(list(per_subject(rows, key).values()))
    out["subjects"] = len({r["subject"] for r in rows})
    for key in VOLUME_KEYS:  # per subject: its mean |shown - true| volume change over seeds, and the two changes
        errors = per_subject(rows, f"dv_error_{key}")
        if errors:
            out[f"volume_error_{key}"] = float(np.mean(list(errors.values())))
            out[f"volume_error_{key}_ci"] = bootstrap_ci(list(errors.values()))
            out[f"volume_change_{key}"] = _mean_of(rows, f"dv_{key}")
            out[f"volume_change_true_{key}"] = _mean_of(rows, f"dv_true_{key}")
    for name, key in (("flip_rate_subjects", "flipped"), ("flip_rate_judge_subjects", "flipped_judge")):
        flips = [v > 0.5 for v in per_subject(rows, key).values()]
        out[name] = float(np.mean(flips)) if flips else None
        out[f"{name}_ci"] = wilson(sum(flips), len(flips))
    return out


def entry(rows: Sequence[dict], real: Sequence[dict], directions: bool = True) -> dict:
    """One method at one w: every metric's mean (and sd over seeds), the flip rates' 95 % intervals (over subjects
    and seeds), the statistics over subjects, the KIDs and their number of images, and the same per direction."""
    out: dict = {"n": len(rows)}
    for name, key in METRICS.items():
        out[name], out[f"{name}_sd"] = _mean_sd(rows, key)
    out["flip_rate_ci"], out["flip_rate_judge_ci"] = _rate_ci(rows, "flipped"), _rate_ci(rows, "flipped_judge")
    out.update(_subject_statistics(rows))
    real_by = {c: [r["features"] for r in real if r["label"] == c] for c in ("CN", "AD")}
    gen_by = {c: [r["features"] for r in rows if r["target"] == c] for c in ("CN", "AD")}
    for name in KIDS:
        out[name] = _kid_or_none(real_by[name[1:3]], gen_by[name[5:7]])
    out["kid_all"] = _kid_or_none([r["features"] for r in real], [r["features"] for r in rows])
    out["kid_n"] = {"real": len(real), "generated": len(rows)}
    if not directions:
        return out
    out["by_direction"] = {}
    for direction in sorted({f"{r['source']}->{r['target']}" for r in rows}):
        part = [r for r in rows if f"{r['source']}->{r['target']}" == direction]
        d = {"n": len(part)}
        for name, key in METRICS.items():
            d[name], d[f"{name}_sd"] = _mean_sd(part, key)
        d.update(_subject_statistics(part))
        out["by_direction"][direction] = d
    return out


SPLITS = ("seen", "held_out_anatomy")


def summarise_methods(
    rows: Sequence[dict],
    real: Sequence[dict],
    default_w: float,
    ours: str = "ours",
    settings: dict | None = None,
    seen_anatomies: Sequence[str] | None = None,
) -> dict:
    """Every method at the default w and our w sweep, each also split into subjects whose base anatomy the models
    were trained on (``seen``) and subjects of anatomies they never saw (``held_out_anatomy``)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    tested = sorted({r.get("anatomy", "icbm2009a") for r in rows})
    seen = sorted(set(seen_anatomies) if seen_anatomies is not None else set(tested))

    def split(part: Sequence[dict]) -> dict[str, list[dict]]:
        known = [r.get("anatomy", "icbm2009a") in seen for r in part]
        return {
            "seen": [r for r, k in zip(part, known) if k],
            "held_out_anatomy": [r for r, k in zip(part, known) if not k],
        }

    inputs = {r["subject"]: r for r in rows}.values()  # one verdict on the input per subject
    summary: dict = {
        "settings": settings or {},
        "anatomies": {"train": seen, "test": tested, "held_out": [a for a in tested if a not in seen]},
        "classifier_accuracy": _mean_of(inputs, "input_correct"),
        "classifier_accuracy_split": {k: _mean_of(v, "input_correct") for k, v in split(list(inputs)).items()},
        "classifier_calibration": calibration(inputs),
        "methods": {},
        "w_sweep": [],
    }
    for m in methods:
        at_default = [r for r in rows if r["method"] == m and float(r["w"]) == float(default_w)]
        if at_default:
            summary["methods"][m] = entry(at_default, real)
            for name, part in split(at_default).items():
                summary["methods"][m][name] = entry(part, real, directions=False) if part else None
    summary["paired"] = paired_comparisons(rows, default_w, ours)

    def w_sweep(method: str) -> list[dict]:
        out = []
        for w in sorted({float(r["w"]) for r in rows if r["method"] == method}):
            at_w = [r for r in rows if r["method"] == method and r["w"] == w]
            sweep = {"w": w, **entry(at_w, real)}
            for name, part in split(at_w).items():
                sweep[name] = entry(part, real, directions=False) if part else None
            out.append(sweep)
        return out

    summary["w_sweep"] = w_sweep(ours)
    summary["best_w"] = best_w(summary["w_sweep"])
    # other methods run over the whole sweep (ours shown as an intensity change): their curves beside ours
    swept = [m for m in methods if m != ours and len({float(r["w"]) for r in rows if r["method"] == m}) > 1]
    summary["w_sweeps"] = {m: w_sweep(m) for m in swept}
    summary["best_w_by_method"] = {m: best_w(v) for m, v in summary["w_sweeps"].items()}
    return summary


def best_w(sweep: Sequence[dict]) -> dict[str, dict]:
    """Per direction, the w of ours whose change best matches the true change (highest R² pooled over subjects): the
    strength at which the explanation should be read, to compare with the product's default."""
    out: dict[str, dict] = {}
    for e in sweep:
        for direction, d in (e.get("by_direction") or {}).items():
            r2 = d.get("change_r2_pooled")
            if r2 is not None and (direction not in out or r2 > out[direction]["change_r2_pooled"]):
                out[direction] = {"w": e["w"], "change_r2_pooled": r2}
    return out


def calibration(inputs: Sequence[dict], bins: int = 5) -> dict:
    """How far the explained classifier's confidence on the inputs (one row per subject) is from its accuracy: the
    expected calibration error over equal-width confidence bins, and the bins (the reliability diagram's points)."""
    confidence = np.array([max(r["p_target_input"], 1 - r["p_target_input"]) for r in inputs], dtype=np.float64)
    correct = np.array([bool(r["input_correct"]) for r in inputs], dtype=np.float64)
    if not len(confidence):
        return {"n": 0, "ece": None, "bins": []}
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap = abs(float(correct[inside].mean()) - float(confidence[inside].mean()))
            ece += inside.mean() * gap
            mean_confidence, accuracy = float(confidence[inside].mean()), float(correct[inside].mean())
            span = {"from": float(edges[b]), "to": float(edges[b + 1]), "n": int(inside.sum())}
            table.append({**span, "confidence": mean_confidence, "accuracy": accuracy})
    return {"n": len(confidence), "ece": float(ece), "bins": table}


def paired_comparisons(rows: Sequence[dict], default_w: float, ours: str = "ours") -> dict:
    """Ours against every other method at the default w, subject by subject (each subject's mean over seeds): the
    mean difference (ours - other) with its bootstrap interval over subjects, and the share of subjects where ours
    scores higher."""
    at = [r for r in rows if float(r["w"]) == float(default_w)]
    mine = {k: per_subject([r for r in at if r["method"] == ours], k) for k in PAIRED}
    out: dict = {}
    for method in dict.fromkeys(r["method"] for r in at):
        if method == ours:
            continue
        theirs = [r for r in at if r["method"] == method]
        out[method] = {}
        for key in PAIRED:
            other = per_subject(theirs, key)
            both = sorted(set(mine[key]) & set(other))
            diffs = [mine[key][s] - other[s] for s in both]
            out[method][key] = {
                "subjects": len(both),
                "mean_difference": float(np.mean(diffs)) if diffs else None,
                "ci": bootstrap_ci(diffs),
                "ours_higher": float(np.mean([d > 0 for d in diffs])) if diffs else None,
            }
    return out


def _mean_of(rows, key: str) -> float | None:
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


# --- writing ---------------------------------------------------------------------------------------------------------


def _fmt(entry: dict, key: str, digits: int = 3) -> str:
    v, sd = entry.get(key), entry.get(f"{key}_sd")
    if v is None:
        return "–"
    text = f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.0f}"
    return text + (f" ± {sd:.{digits}f}" if sd is not None else "")


SIMILARITY = [("SSIM ↑", "ssim"), ("MSE ↓", "mse")]
CLASS = [("rCN2gAD ↑", "rCN2gAD"), ("rAD2gAD ↓", "rAD2gAD"), ("rCN2gCN ↓", "rCN2gCN"), ("rAD2gCN ↑", "rAD2gCN")]
TRUTH = [
    ("KID ↓", "kid_all"),
    ("flip (explained) ↑", "flip_rate"),
    ("flip (judge) ↑", "flip_rate_judge"),
    ("SSIM to true cf ↑", "ssim_true_cf"),
    ("saliency AUROC ↑", "saliency_auroc"),
    ("saliency Dice ↑", "saliency_dice"),
]
AXIOMS = [("composition MSE ↓", "composition_mse"), ("reversibility MSE ↓", "reversibility_mse")]


def _table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def markdown(summary: dict) -> str:
    cols = SIMILARITY + CLASS + TRUTH
    sweep = _table(
        ["w", *[c for c, _ in cols]],
        [[f"{e['w']:g}", *[_fmt(e, k, 4 if k == "mse" else 3) for _, k in cols]] for e in summary["w_sweep"]],
    )
    other_sweeps = "\n\n".join(
        f"**{m}** across w:\n\n"
        + _table(
            ["w", *[c for c, _ in cols]],
            [[f"{e['w']:g}", *[_fmt(e, k, 4 if k == "mse" else 3) for _, k in cols]] for e in entries],
        )
        for m, entries in summary.get("w_sweeps", {}).items()
    )
    cols2 = cols + AXIOMS
    methods = _table(
        ["method", *[c for c, _ in cols2]],
        [[m, *[_fmt(e, k, 4 if "mse" in k else 3) for _, k in cols2]] for m, e in summary["methods"].items()],
    )
    dir_cols = [("SSIM", "ssim"), ("flip (explained)", "flip_rate"), ("flip (judge)", "flip_rate_judge")]
    dir_cols += [("SSIM to true cf", "ssim_true_cf"), ("AUROC", "saliency_auroc"), ("Dice", "saliency_dice")]
    directions = _table(
        ["method", "direction", "n", *[c for c, _ in dir_cols]],
        [
            [m, d, str(v["n"]), *[_fmt(v, k) for _, k in dir_cols]]
            for m, e in summary["methods"].items()
            for d, v in e["by_direction"].items()
        ],
    )
    split_cols = [("SSIM to true cf", "ssim_true_cf"), ("MSE to true cf", "mse_true_cf")]
    split_cols += [("AUROC", "saliency_auroc"), ("Dice", "saliency_dice"), ("flip (judge)", "flip_rate_judge")]
    split_cols += [("composition MSE", "composition_mse")]
    splits = _table(
        ["method", "subjects", "n", *[c for c, _ in split_cols]],
        [
            [
                m,
                part.replace("_", " "),
                str(e[part]["n"]),
                *[_fmt(e[part], k, 4 if "mse" in k else 3) for _, k in split_cols],
            ]
            for m, e in summary["methods"].items()
            for part in SPLITS
            if e.get(part)
        ],
    )
    signed_cols = [
        ("R² pooled", "change_r2_pooled"),
        ("R² (subjects)", "change_r2"),
        ("R² scale-fitted", "change_r2_fit"),
    ]
    signed_cols += [("r", "change_r"), ("sign agreement", "sign_agreement"), ("swap: own closer", "swap_rate")]
    signed = _table(
        ["method", "direction", "subjects", *[c for c, _ in signed_cols], "flip (judge), subjects"],
        [
            [
                m,
                d,
                str(v.get("subjects", "–")),
                *[_fmt(v, k) + _ci_text(v.get(f"{k}_ci")) for _, k in signed_cols],
                _fmt(v, "flip_rate_judge_subjects", 2) + _ci_text(v.get("flip_rate_judge_subjects_ci")),
            ]
            for m, e in summary["methods"].items()
            for d, v in e["by_direction"].items()
        ],
    )
    volume = _table(
        ["method", "direction", *VOLUME_REGIONS],
        [
            [m, d, *[_volume_cell(v, key) for key in VOLUME_KEYS]]
            for m, e in summary["methods"].items()
            for d, v in e["by_direction"].items()
        ],
    )
    paired = _table(
        ["ours against", "subjects", "Δ R²", "ours higher", "Δ R² scale-fitted", "Δ r", "Δ SSIM to true cf"],
        [
            [
                m,
                str(c["change_r2"]["subjects"]),
                _diff(c["change_r2"]),
                _share(c["change_r2"]["ours_higher"]),
                _diff(c["change_r2_fit"]),
                _diff(c["change_r"]),
                _diff(c["ssim_true_cf"]),
            ]
            for m, c in summary.get("paired", {}).items()
        ],
    )
    anatomies = summary.get("anatomies", {})
    flips = _table(
        ["w", "flip (judge)", "95 % interval", "flip (explained)", "95 % interval"],
        [
            [
                f"{e['w']:g}",
                _fmt(e, "flip_rate_judge"),
                _interval(e.get("flip_rate_judge_ci")),
                _fmt(e, "flip_rate"),
                _interval(e.get("flip_rate_ci")),
            ]
            for e in summary["w_sweep"]
        ],
    )
    accuracy = summary.get("classifier_accuracy")
    best = summary.get("best_w") or {}
    best_text = "; ".join(f"{d}: w = {b['w']:g} (R² pooled {b['change_r2_pooled']:.3f})" for d, b in best.items())
    parts = [
        "# ControlCG evaluation",
        _settings_text(summary.get("settings", {})),
        f"Anatomies seen in training: {', '.join(anatomies.get('train', [])) or '–'}; held out (never seen): "
        f"{', '.join(anatomies.get('held_out', [])) or 'none'}. The explained classifier's accuracy on these inputs: "
        + (f"{accuracy:.3f}" if accuracy is not None else "–")
        + _calibration_text(summary.get("classifier_calibration"))
        + ". `identity` (the input unchanged) is every metric's floor, `oracle` (the true counterfactual) its ceiling; "
        "`atlas` (the mean true change of other subjects of that direction, added to the input) is the best any "
        "explanation blind to this patient can do, and `other-subject` (another subject's true change on this input) "
        "the swap test's reference.",
        "## Table 1 — our method across w (Eq. 5's scale; larger w = stronger guidance toward the target class)",
        sweep,
        "The w whose change best matches the true change, per direction: " + (best_text or "–") + ".",
        other_sweeps,
        f"## Table 2 — methods compared at w = {summary.get('settings', {}).get('default_w', '?')}",
        methods,
        "### Per direction (adding disease and removing it are not equally hard)",
        directions,
        "### The signed change against the true change, per direction (subjects are the sample; [95 % bootstrap "
        "interval over subjects])",
        signed,
        "### Regional volume change against the truth's, per direction: |shown − true| in percentage points [95 % "
        "bootstrap interval over subjects] (mean shown change / mean true change, %; one intensity ruler for every "
        "image, evaluation/volumes.py)",
        volume,
        "### Ours against every other method at the default w, subject by subject (Δ = ours − other, [95 % bootstrap "
        "interval over subjects])",
        paired,
        "### Seen anatomies and anatomies never seen in training",
        splits,
        "### Flip rate across w, with 95 % Wilson intervals over subjects and seeds",
        flips,
    ]
    if summary.get("augmentation_detail"):
        aug = summary["augmentation_detail"]
        gen_kid = {m: summary["methods"].get(m, {}).get("kid_all") for m in aug}
        parts += [
            "## Table 3 — classifier trained with generated images added (same training budget for every method)",
            _table(
                ["extra data", "accuracy", "balanced accuracy", "AUC", "KID of the extra data"],
                [
                    [
                        m,
                        f"{a['accuracy']:.3f}",
                        f"{a['balanced_accuracy']:.3f}",
                        f"{a['auc']:.3f}" if a.get("auc") is not None else "–",
                        f"{gen_kid[m]:.3f}" if gen_kid.get(m) is not None else "–",
                    ]
                    for m, a in aug.items()
                ],
            ),
        ]
    parts.append(
        "Reading guide: SSIM/MSE compare each counterfactual with its input; the four KIDs (kernel inception "
        "distance, unbiased, on the explained classifier's pooled features; n in summary.json's kid_n) compare "
        "generated sets with real ones (r = real, g = generated); 'flip' is the "
        "share of counterfactuals assigned to the target class by the explained classifier and by an independently "
        "trained judge; 'true cf' and the saliency scores use the simulator's ground truth; composition = MSE of a "
        "counterfactual toward the input's own class, reversibility = MSE after going to the target and back. "
        "The signed scores compare the shown change (cf − input) with the true change in the brain: R² = 1 − "
        "‖cf − truth‖² / ‖input − truth‖² (0 = no better than showing nothing; pooled = the sums over all rows, "
        "stable where a mild case's own R² is not), the same after the best scalar multiple of the change, Pearson r, "
        "the share of truly changed voxels changed the same way, and the swap test: the share of subjects whose "
        "change correlates better with their own true change than with another subject's. Regional volume change: "
        "each region's tissue (CSF for the ventricles) read from intensity with one ruler for the input, every "
        "counterfactual and the truth (evaluation/volumes.py; at 4 mm the hippocampi's change reads about a sixth of "
        "its true size, the ventricles' in full); the error is |shown − true| in percentage points. Means over "
        "subjects and seeds; ± = sd of the per-seed means."
    )
    return "\n\n".join(parts) + "\n"


def _calibration_text(calibrated: dict | None) -> str:
    if not calibrated or calibrated.get("ece") is None:
        return ""
    points = "; ".join(f"{b['confidence']:.2f} → {b['accuracy']:.2f} (n {b['n']})" for b in calibrated["bins"])
    ece, n = calibrated["ece"], calibrated["n"]
    return f" (expected calibration error {ece:.3f} over {n} inputs; confidence → accuracy: {points})"


def _volume_cell(entry: dict, key: str) -> str:
    error = entry.get(f"volume_error_{key}")
    if error is None:
        return "–"
    shown, true = entry.get(f"volume_change_{key}"), entry.get(f"volume_change_true_{key}")
    return f"{error:.1f}{_ci_text(entry.get(f'volume_error_{key}_ci'), 1)} ({shown:+.1f} / {true:+.1f})"


def _ci_text(ci, digits: int = 2) -> str:
    return f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else ""


def _diff(comparison: dict) -> str:
    d = comparison.get("mean_difference")
    return "–" if d is None else f"{d:+.3f}" + _ci_text(comparison.get("ci"))


def _share(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def _interval(ci) -> str:
    return f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "–"


def _settings_text(settings: dict) -> str:
    if not settings:
        return ""
    return "Settings: " + ", ".join(f"{k} = {v}" for k, v in settings.items() if not isinstance(v, dict | list))


def tradeoff_plot(path: Path, summary: dict) -> Path:
    """Similarity to the input against class change, our w sweep as a line, every method at the default w a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, (ykey, ylabel) in zip(
        axes, [("p_target", "p(target class), explained classifier"), ("saliency_auroc", "saliency AUROC vs truth")]
    ):
        sweep = [e for e in summary["w_sweep"] if e.get(ykey) is not None]
        ax.plot([e["ssim"] for e in sweep], [e[ykey] for e in sweep], "-o", color="black", label="ours, w sweep")
        for e in sweep:
            ax.annotate(f"w={e['w']:g}", (e["ssim"], e[ykey]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for m, e in summary["methods"].items():
            if m == "ours" or e.get(ykey) is None:
                continue
            ax.errorbar(e["ssim"], e[ykey], xerr=e.get("ssim_sd") or 0, yerr=e.get(f"{ykey}_sd") or 0, fmt="s", label=m)
        ax.set_xlabel("SSIM to the input (similarity)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("similarity against class change (mean over subjects and seeds; bars: sd over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def reliability_plot(path: Path, calibrated: dict) -> Path | None:
    """The explained classifier's reliability diagram on the inputs: accuracy against confidence per bin (the
    diagonal is a calibrated classifier), each bin's number of inputs written beside it; None without inputs."""
    if not calibrated or not calibrated.get("bins"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = calibrated["bins"]
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0.5, 1.0], [0.5, 1.0], "--", color="grey", label="calibrated")
    width = bins[0]["to"] - bins[0]["from"]
    ax.bar([b["from"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge", alpha=0.35,
           edgecolor="black", label="accuracy in the bin")  # fmt: skip
    ax.plot(
        [b["confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        "o-",
        color="black",
        label="accuracy at the mean confidence",
    )
    for b in bins:
        ax.annotate(f"n {b['n']}", (b["from"] + width / 2, b["accuracy"]), textcoords="offset points", xytext=(0, 4),
                    ha="center", fontsize=8)  # fmt: skip
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("confidence of the verdict (max p)")
    ax.set_ylabel("share of verdicts right")
    ax.set_title(
        f"explained classifier on the inputs\nECE {calibrated['ece']:.3f}, {calibrated['n']} subjects", fontsize=10
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_report(out: Path, summary: dict, rows: Sequence[dict]) -> None:
    import csv

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(markdown(summary))
    fields = [k for k in rows[0] if k != "features"]
    with open(out / "rows.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tradeoff_plot(out / "tradeoff.png", summary)
    reliability_plot(out / "reliability.png", summary.get("classifier_calibration") or {})
