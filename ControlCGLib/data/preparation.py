"""A researcher's cohort made ready for training and evaluation: every scan of an ADNI-style CSV through the product's
own preparation (imaging/native_space.prepare: the scan checks, the registration to the template, the brain mask on
the model grid, the paper's intensity normalisation -- exactly what ``controlcg counterfactual`` does to a scan), kept
as the model input itself.

Output folder::

    scans/<key>.nii.gz        the model input on the model grid (float32, [0, 1], brain only): read back as it is
    scans/<key>_mask.nii.gz   the brain mask on the model grid (uint8)
    records/<key>.json        what happened to the scan (prepared or refused, and why), its QC figures and its time
    prepared.csv              image,label,subject,split,prepared,mask,source: ``train``/``evaluate --cohort`` read it
    refusals.csv              every scan refused, with its reason
    qc.csv                    per scan: registration metric, its robust z-score, the scan checks' figures, flags
    contact_sheet*.png        one mid-slice triplet per prepared scan, labelled, flagged ones marked
    summary.json              counts, refusals by reason, flagged scans, seconds per scan

A scan is done when its record exists (the record is written last, and every file goes through a temporary name and
a rename), so a run that stops -- a crash, a killed array job, a cancel -- is resumed by running it again: finished
scans are not redone and nothing half-written is ever read. Scans are split over processes (``workers``) and shards
(``shard=(i, n)``: a cluster array job, or torchrun's ranks); the tables are written once every scan has its record.

``prepared.csv`` marks its rows ``prepared=<grid>``: data/cohort.CohortDataset then reads each volume as it is, so
training sees bit for bit the array ``controlcg counterfactual`` gives the model for the same scan.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..imaging.native_space import prepare
from ..imaging.reading import read_scan
from ..imaging.scan_checks import ScanRefused
from ..model.config import IntensityConfig
from ..progress import Cancelled
from .cohort import Scan, read_cohort

__all__ = ["Cancelled", "PrepareSettings", "prepare_cohort", "prepare_scan", "robust_z"]

PREPARED = "prepared"
REFUSED = "refused"
#: |robust z| of the registration metric above which a scan is flagged for a look (Iglewicz and Hoaglin's 3.5).
OUTLIER_Z = 3.5
#: Scans per contact-sheet page (4 triplets a row).
SHEET_PAGE = 48
PREPARED_COLUMNS = ("image", "label", "subject", "split", "prepared", "mask", "source")


@dataclass(frozen=True)
class PrepareSettings:
    grid: tuple[int, int, int]  # (z, y, x) model grid
    intensity: IntensityConfig = IntensityConfig()
    screen: str = "refuse"  # imaging/native_space.SCREEN_MODES: "warn" accepts unusual scans, keeping the findings

    @property
    def grid_tag(self) -> str:
        return "x".join(str(int(g)) for g in self.grid)


def scan_key(scan: Scan) -> str:
    """A stable file name for a scan: its subject and a hash of its source path (rows may be reordered)."""
    subject = re.sub(r"[^A-Za-z0-9_.-]+", "_", scan.subject).strip("._") or "subject"
    digest = hashlib.sha1(str(scan.image).encode()).hexdigest()[:10]
    return f"{subject}_{digest}"


def _atomic_image(image: sitk.Image, path: Path) -> None:
    partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
    sitk.WriteImage(image, str(partial), useCompression=True)
    os.replace(partial, path)


def _atomic_text(text: str, path: Path) -> None:
    partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def prepare_scan(scan: Scan, out: str | Path, settings: PrepareSettings) -> dict:
    """Prepare one scan into ``out`` (scans/, records/) and return its record; a refusal is a record too."""
    out = Path(out)
    key = scan_key(scan)
    began = time.perf_counter()
    record = {
        "key": key,
        "row": scan.row,
        "source": str(scan.image),
        "label": scan.label,
        "subject": scan.subject,
        "split": scan.split or "",
        "grid": settings.grid_tag,
    }
    try:
        native = read_scan(scan.image)
        prepared = prepare(native, settings.grid, intensity=settings.intensity, screen=settings.screen)
    except ScanRefused as exc:
        record.update(status=REFUSED, kind="scan check", reason="; ".join(exc.findings))
    except (ValueError, OSError, RuntimeError) as exc:
        from ..imaging.reading import error_line

        kind = "unreadable" if "read" in str(exc) or "exist" in str(exc) or "truncated" in str(exc) else "not a scan"
        record.update(status=REFUSED, kind=kind, reason=error_line(exc))
    else:
        grid = prepared.grid
        image = sitk.GetImageFromArray(np.asarray(prepared.model_input, dtype=np.float32))
        image.CopyInformation(grid)
        mask = sitk.GetImageFromArray(np.asarray(prepared.mask, dtype=np.uint8))
        mask.CopyInformation(grid)
        (out / "scans").mkdir(parents=True, exist_ok=True)
        _atomic_image(image, out / "scans" / f"{key}.nii.gz")
        _atomic_image(mask, out / "scans" / f"{key}_mask.nii.gz")
        screening = prepared.screening.as_dict() if prepared.screening else {}
        record.update(
            status=PREPARED,
            image=f"scans/{key}.nii.gz",
            mask=f"scans/{key}_mask.nii.gz",
            registration_metric=prepared.registration_metric,
            tissue_separation=screening.get("tissue_separation"),
            brain_coverage=screening.get("brain_coverage"),
            tissue_levels=screening.get("tissue_levels"),
            warnings=list(prepared.warnings),
            intensity_range=[prepared.low, prepared.high],
            native_size=list(native.GetSize()),
            native_spacing=[round(s, 4) for s in native.GetSpacing()],
        )
    record["seconds"] = round(time.perf_counter() - began, 3)
    (out / "records").mkdir(parents=True, exist_ok=True)
    _atomic_text(json.dumps(record, indent=1) + "\n", out / "records" / f"{key}.json")
    return record


def _worker_init(threads: int) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _record_path(out: Path, scan: Scan) -> Path:
    return out / "records" / f"{scan_key(scan)}.json"


def read_records(out: str | Path, scans: Sequence[Scan]) -> list[dict | None]:
    """Each scan's record, None where it has none yet."""
    out = Path(out)
    found = []
    for s in scans:
        path = _record_path(out, s)
        found.append(json.loads(path.read_text()) if path.exists() else None)
    return found


def clean_partials(out: str | Path) -> int:
    """Remove what an interrupted run left half-written (never a finished file); returns how many."""
    removed = 0
    for folder in (Path(out) / "scans", Path(out) / "records", Path(out)):
        if folder.is_dir():
            for p in folder.glob(".partial-*"):
                p.unlink()
                removed += 1
    return removed


def prepare_cohort(
    cohort: str | Path,
    out: str | Path,
    settings: PrepareSettings,
    *,
    class_names: Sequence[str] = ("CN", "AD"),
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    on_scan: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    write_tables: bool = True,
) -> dict:
    """Prepare this shard's scans not yet done (``shard=(i, n)``: rows i, i+n, ...), then, when every scan of the
    cohort has its record and ``write_tables``, write the tables and figures; returns the summary (``complete``
    False while scans of other shards are missing). ``on_scan`` hears every record (skipped ones included, with
    ``"skipped": True``); ``should_stop`` is asked before each scan starts (:class:`Cancelled`)."""
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scans = read_cohort(cohort, class_names, check_files=False)  # unreadable files become refusals, not an error
    keys = [scan_key(s) for s in scans]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{cohort}: the same image is listed twice for one subject ({dup[0]}); list each scan once")
    _check_settings(out, settings)
    clean_partials(out)
    mine = scans[index::count]
    todo = []
    for s in mine:
        path = _record_path(out, s)
        if path.exists():
            if on_scan is not None:
                on_scan({**json.loads(path.read_text()), "skipped": True})
        else:
            todo.append(s)

    def stop() -> None:
        if should_stop is not None and should_stop():
            raise Cancelled("preparation stopped; run it again to finish (finished scans are kept)")

    if workers == 1 or len(todo) <= 1:
        for s in todo:
            stop()
            record = prepare_scan(s, out, settings)
            if on_scan is not None:
                on_scan(record)
    else:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # ITK's threads do not survive a fork
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(1,)) as pool:
            pending = list(todo)
            running = []
            try:
                while pending or running:
                    while pending and len(running) < workers:
                        stop()
                        running.append(pool.submit(prepare_scan, pending.pop(0), out, settings))
                    done = running.pop(0).result()
                    if on_scan is not None:
                        on_scan(done)
            except Cancelled:
                for f in running:
                    f.result()  # let the scans under way finish: their files are whole
                raise
    records = read_records(out, scans)
    complete = all(r is not None for r in records)
    summary = summarise([r for r in records if r is not None], len(scans), settings)
    if complete and write_tables:
        write_tables_and_figures(out, [r for r in records if r is not None], summary)
    return summary


def _check_settings(out: Path, settings: PrepareSettings) -> None:
    """A folder holds one grid and one normalisation: resuming with others would mix two preparations."""
    path = out / "settings.json"
    mine = {"grid": list(settings.grid), "intensity": {"percentile": settings.intensity.percentile}}
    mine["screen"] = settings.screen
    if path.exists():
        theirs = json.loads(path.read_text())
        if theirs != mine:
            raise ValueError(
                f"{out} holds a preparation with other settings ({theirs}, asked {mine}); choose another --out"
            )
    else:
        _atomic_text(json.dumps(mine) + "\n", path)


def robust_z(values: Sequence[float]) -> list[float]:
    """(x - median) / (1.4826 MAD); 0 where the spread is 0."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return []
    mad = 1.4826 * float(np.median(np.abs(v - np.median(v))))
    if mad <= 0:
        return [0.0] * v.size
    return [round(float(z), 3) for z in (v - np.median(v)) / mad]


def summarise(records: Sequence[dict], total: int, settings: PrepareSettings) -> dict:
    prepared = [r for r in records if r["status"] == PREPARED]
    refused = [r for r in records if r["status"] == REFUSED]
    metrics = [r for r in prepared if r.get("registration_metric") is not None]
    for r, z in zip(metrics, robust_z([r["registration_metric"] for r in metrics])):
        r["registration_z"] = z
    flagged = []
    for r in prepared:
        why = []
        if abs(r.get("registration_z") or 0.0) > OUTLIER_Z:
            why.append(
                f"registration metric {r['registration_metric']:.4f} is an outlier "
                f"(robust z {r['registration_z']:+.1f})"
            )
        why += r.get("warnings") or []
        r["flags"] = why
        if why:
            flagged.append({"key": r["key"], "subject": r["subject"], "source": r["source"], "flags": why})
    seconds = [r["seconds"] for r in records if r["status"] == PREPARED]
    by_kind: dict[str, int] = {}
    for r in refused:
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0) + 1
    return {
        "complete": len(records) == total,
        "scans": total,
        "done": len(records),
        "prepared": len(prepared),
        "refused": len(refused),
        "refused_by_kind": by_kind,
        "refusals": [{"subject": r["subject"], "source": r["source"], "reason": r["reason"]} for r in refused],
        "flagged": flagged,
        "grid": list(settings.grid),
        "seconds_per_scan": {
            "median": round(float(np.median(seconds)), 3) if seconds else None,
            "mean": round(float(np.mean(seconds)), 3) if seconds else None,
        },
        "labels": {c: sum(r["label"] == c for r in prepared) for c in sorted({r["label"] for r in prepared})},
    }


def write_tables_and_figures(out: Path, records: Sequence[dict], summary: dict) -> None:
    prepared = [r for r in records if r["status"] == PREPARED]
    refused = [r for r in records if r["status"] == REFUSED]
    _write_csv(
        out / "prepared.csv",
        PREPARED_COLUMNS,
        [
            {**{k: r[k] for k in ("image", "label", "subject", "split", "mask", "source")}, "prepared": r["grid"]}
            for r in prepared
        ],
    )
    _write_csv(out / "refusals.csv", ("source", "label", "subject", "kind", "reason"), refused)
    qc_columns = (
        "key", "subject", "label", "source", "registration_metric", "registration_z", "tissue_separation",
        "brain_coverage", "wm", "gm", "csf", "seconds", "flags",
    )  # fmt: skip
    qc = [
        {
            **r,
            **(r.get("tissue_levels") or {}),
            "flags": " | ".join(r.get("flags") or []),
        }
        for r in prepared
    ]
    _write_csv(out / "qc.csv", qc_columns, qc)
    for old in out.glob("contact_sheet*.png"):
        old.unlink()
    contact_sheets(out, prepared)
    _atomic_text(json.dumps(summary, indent=1) + "\n", out / "summary.json")


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
    with open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    os.replace(partial, path)


def contact_sheets(out: Path, prepared: Sequence[dict]) -> list[Path]:
    """One mid-slice triplet (axial, coronal, sagittal) per prepared scan, labelled "subject label", flagged ones
    titled in red; pages of :data:`SHEET_PAGE` scans."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pages = [prepared[i : i + SHEET_PAGE] for i in range(0, len(prepared), SHEET_PAGE)]
    paths = []
    per_row = 4
    for number, page in enumerate(pages, start=1):
        rows = (len(page) + per_row - 1) // per_row
        fig, axes = plt.subplots(rows, per_row * 3, figsize=(per_row * 3 * 1.3, rows * 1.6), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for i, r in enumerate(page):
            image = sitk.ReadImage(str(out / r["image"]))
            volume, spacing = sitk.GetArrayFromImage(image), image.GetSpacing()  # spacing (x, y, z)
            z, y, x = (s // 2 for s in volume.shape)
            views = (
                (volume[z], spacing[1] / spacing[0]),
                (volume[::-1, y], spacing[2] / spacing[0]),
                (volume[::-1, :, x], spacing[2] / spacing[1]),
            )
            for j, (view, aspect) in enumerate(views):
                ax = axes[i // per_row, (i % per_row) * 3 + j]
                ax.imshow(view, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
                if j == 1:
                    colour = "red" if r.get("flags") else "black"
                    ax.set_title(f"{r['subject']} {r['label']}" + (" (!)" if r.get("flags") else ""), fontsize=7,
                                 color=colour)  # fmt: skip
        fig.suptitle(f"prepared scans on the {r['grid']} model grid (page {number} of {len(pages)})", fontsize=9)
        fig.tight_layout()
        name = "contact_sheet.png" if len(pages) == 1 else f"contact_sheet_{number:03d}.png"
        partial = out / f".partial-{os.getpid()}-{name}"
        fig.savefig(partial, dpi=110, format="png")
        plt.close(fig)
        os.replace(partial, out / name)
        paths.append(out / name)
    return paths
