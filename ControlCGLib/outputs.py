"""The result folder of a counterfactual run: one record type, one writer, one reader.

``controlcg counterfactual`` writes it (:func:`write_result_folder`); the Slicer bridge and the docs' scripts read it
(:func:`read_result_folder`). Every w is spelled by :func:`~ControlCGLib.defaults.w_key` ("4", "2.5") in keys and in
file names (``counterfactual_w4.nii.gz``). Imports SimpleITK and numpy only (the Slicer panel reads results without
torch).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import SimpleITK as sitk

from . import __version__
from .defaults import w_key
from .progress import Cancelled

FORMAT_VERSION = 2  # 2: verdicts keyed by w_key with the input's apart (1 keyed them "input", "w=4")
RESULT_FILE = "result.json"
MASK_FILE = "brain_mask.nii.gz"
MONTAGE_FILE = "montage.png"
Kind = Literal["counterfactual", "counterfactual_resampled", "saliency", "volume_change", "residual"]
KINDS: tuple[Kind, ...] = ("counterfactual", "counterfactual_resampled", "saliency")
#: Written by a deformation run only: the log of the local volume ratio counterfactual / input (> 0 grows), and the
#: model's intensity change the deformation does not explain (imaging/deformation.py).
OPTIONAL_KINDS: tuple[Kind, ...] = ("volume_change", "residual")
_SHORT = {
    "counterfactual": "cf",
    "counterfactual_resampled": "cf-resampled",
    "saliency": "saliency",
    "volume_change": "logjac",
    "residual": "residual",
}


@dataclass
class RunRecord:
    """What result.json holds: what was asked, with which model, what came out and what the classifier said."""

    input: str
    target: str
    model: str
    model_sha256: str
    class_names: list[str]
    settings: dict[str, Any]  # sampling, seed, device, registration, scan checks, code version
    classifier: str | None = None
    classifier_sha256: str | None = None
    input_verdict: dict[str, float] = field(default_factory=dict)  # class -> probability; empty without classifier
    verdicts: dict[str, dict[str, float]] = field(default_factory=dict)  # w_key -> class -> probability
    raw_verdicts: dict[str, dict[str, float]] = field(default_factory=dict)  # the same, of the raw model output
    # w_key -> region -> input_ml, counterfactual_ml, change_percent (a deformation run: regions.py)
    volumes: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # w_key -> kind -> file name
    files: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @property
    def scales(self) -> list[float]:
        return sorted(float(k) for k in self.outputs)

    def verdict(self, w: float) -> dict[str, float]:
        return self.verdicts.get(w_key(w), {})

    @property
    def warnings(self) -> list[str]:
        """What the scan checks found and the user accepted (empty for a scan that passed them)."""
        return list(self.settings.get("scan_warnings") or [])

    @property
    def source(self) -> str | None:
        """The class the change is measured from (a paired run), or None (unpaired: the model's own output)."""
        return self.settings.get("source")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=float) + "\n"

    @classmethod
    def from_dict(cls, data: dict, source: str = "result.json") -> RunRecord:
        if not isinstance(data, dict):
            raise ValueError(f"{source} holds {type(data).__name__}, not a ControlCG run record")
        version = data.get("format_version", 1)
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{source} has result format {version}; this ControlCG ({__version__}) reads format {FORMAT_VERSION}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [n for n in required if n not in data]
        if missing:
            raise ValueError(f"{source} lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})


def provenance(kind: Kind, w: float, record: RunRecord) -> str:
    """The NIfTI description of one output (the format keeps 79 characters): the model's checksum comes first, so
    that a long w or class name cannot push it out."""
    model = record.model_sha256[:12]
    seed = record.settings.get("seed", "")
    return f"ControlCG {__version__} model {model} {_SHORT[kind]} w={w_key(w)} to {record.target} seed {seed}"[:79]


def file_name(kind: Kind, w: float) -> str:
    return f"{kind}_w{w_key(w)}.nii.gz"


def write_result_folder(
    out: str | os.PathLike,
    images: dict[float, dict[Kind, sitk.Image]],
    mask: sitk.Image,
    record: RunRecord,
    *,
    montage: Callable[[Path], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunRecord:
    """Every output into a temporary folder inside ``out``, moved in only when all are written: a failure or a cancel
    (``should_stop`` is asked last) leaves ``out`` -- and the parents this call made -- as they were. Each NIfTI
    carries :func:`provenance` in its header; result.json has the rest. Returns the record with its file lists."""
    out = Path(out)
    made = [p for p in (out, *out.absolute().parents) if not p.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            tmp = Path(tmp)
            outputs: dict[str, dict[str, str]] = {}
            for w, by_kind in images.items():
                for kind in (*KINDS, *(k for k in OPTIONAL_KINDS if k in by_kind)):
                    img, name = by_kind[kind], file_name(kind, w)
                    img.SetMetaData("ITK_FileNotes", provenance(kind, w, record))
                    sitk.WriteImage(img, str(tmp / name), useCompression=True)
                    outputs.setdefault(w_key(w), {})[kind] = name
            sitk.WriteImage(mask, str(tmp / MASK_FILE), useCompression=True)
            extra = [MASK_FILE]
            if montage is not None:
                montage(tmp / MONTAGE_FILE)
                extra.append(MONTAGE_FILE)
            files = sorted([*(f for kinds in outputs.values() for f in kinds.values()), *extra])
            record = dataclasses.replace(record, outputs=outputs, files=files)
            (tmp / RESULT_FILE).write_text(record.to_json())
            if should_stop is not None and should_stop():  # last chance: out still holds nothing of this run
                raise Cancelled("cancelled before writing")
            for f in tmp.iterdir():
                shutil.move(str(f), out / f.name)
    except BaseException:
        for folder in made:
            try:
                folder.rmdir()  # only while empty
            except OSError:
                break
        raise
    return record


def read_record(folder: str | os.PathLike) -> RunRecord:
    path = Path(folder) / RESULT_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"the computation wrote no readable {RESULT_FILE} in {folder}: {exc}") from None
    return RunRecord.from_dict(data, str(path))


def read_result_folder(folder: str | os.PathLike) -> tuple[RunRecord, dict[float, dict[Kind, sitk.Image]]]:
    """The record and, per w, every output image as written (on the input's own grid)."""
    folder = Path(folder)
    record = read_record(folder)
    if not record.outputs:
        raise ValueError(f"{folder / RESULT_FILE} lists no outputs")
    images: dict[float, dict[Kind, sitk.Image]] = {}
    for key, files in record.outputs.items():
        missing = [k for k in KINDS if k not in files]
        if missing:
            raise ValueError(f"{folder / RESULT_FILE}: w={key} lists no {', '.join(missing)}")
        try:
            listed = (*KINDS, *(k for k in OPTIONAL_KINDS if k in files))
            images[float(key)] = {k: sitk.ReadImage(str(folder / files[k])) for k in listed}
        except RuntimeError as exc:
            raise ValueError(f"w={key}: cannot read its images in {folder}: {str(exc).strip()[:200]}") from None
    return record, dict(sorted(images.items()))
