"""Bad runs of the main job: a cancel at every stage, a failure while sampling or writing, an output folder that
cannot be written, a classifier of other classes. Each leaves the input untouched and --out as it was; a good run
records where it came from in every NIfTI header and is reproducible bit for bit."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import tiny_model_files

from ControlCGLib import __version__
from ControlCGLib.cli import main
from ControlCGLib.defaults import EXIT_CANCELLED
from ControlCGLib.hashing import file_sha256
from ControlCGLib.model.checkpoints import WEIGHTS, save_checkpoint
from ControlCGLib.model.config import ClassifierConfig
from ControlCGLib.model.networks import build_classifier

GRID = (8, 12, 8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model and classifier and a simulated subject's T1 (in MNI space, so --preprocessed)."""
    root = tmp_path_factory.mktemp("bad_runs")
    tiny_model_files(root, GRID)
    return root


def _args(setup, out, *extra):
    return [
        "counterfactual",
        str(setup / "t1.nii.gz"),
        "--model",
        str(setup / "model"),
        "--classifier",
        str(setup / "classifier"),
        "--target",
        "AD",
        "--w",
        "0",
        "2",
        "--steps",
        "3",
        "--preprocessed",
        "--no-montage",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize("stage", ["preparing", "sampling", "mapping back", "verdicts", "writing"])
def test_a_cancel_at_any_stage_writes_nothing(stage, setup, tmp_path, monkeypatch, capsys):
    from ControlCGLib.progress import LineProgress

    before = file_sha256(setup / "t1.nii.gz")
    flag = tmp_path / "cancel"
    announce = LineProgress.stage

    def stage_then_cancel(self, name, *a, **k):
        announce(self, name, *a, **k)
        if name == stage:
            flag.write_text("")

    monkeypatch.setattr(LineProgress, "stage", stage_then_cancel)
    out = tmp_path / "out"
    assert main(_args(setup, out, "--progress", "lines", "--cancel-file", str(flag))) == EXIT_CANCELLED
    assert "nothing was written" in capsys.readouterr().err
    assert not out.exists()
    assert file_sha256(setup / "t1.nii.gz") == before


def test_a_failure_while_writing_leaves_no_half_made_output(setup, tmp_path, monkeypatch, capsys):
    calls = []
    write = sitk.WriteImage

    def disk_full(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return write(*a, **k)

    monkeypatch.setattr(sitk, "WriteImage", disk_full)
    out = tmp_path / "out"
    assert main(_args(setup, out)) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() and len(calls) == 3
    # an existing folder the user asked to write into is kept, with nothing of the failed run in it
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    calls.clear()
    assert main(_args(setup, out, "--overwrite")) == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_a_failure_deep_inside_torch_is_one_line(setup, tmp_path, monkeypatch, capsys):
    import ControlCGLib.pipeline as pipeline

    def broken(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes.\n")

    monkeypatch.setattr(pipeline, "counterfactual", broken)
    out = tmp_path / "out"
    assert main(_args(setup, out)) == 1
    err = capsys.readouterr().err
    assert "the computation failed (RuntimeError: DefaultCPUAllocator: can't allocate memory" in err
    assert "Traceback" not in err and "CONTROLCG_DEBUG=1" in err and not out.exists()
    monkeypatch.setenv("CONTROLCG_DEBUG", "1")
    with pytest.raises(RuntimeError, match="DefaultCPUAllocator"):
        main(_args(setup, out))


def _no_model_loading(monkeypatch):
    import ControlCGLib.model.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "load_checkpoint", lambda *a, **k: pytest.fail("loaded a model"))


def test_an_output_under_a_file_is_refused_before_any_work(setup, tmp_path, monkeypatch, capsys):
    _no_model_loading(monkeypatch)
    (tmp_path / "notes.txt").write_text("x")
    assert main(_args(setup, tmp_path / "notes.txt" / "out")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def _proc_takes_files() -> bool:
    try:
        with tempfile.TemporaryFile(dir="/proc"):
            return True
    except OSError:
        return False


@pytest.mark.skipif(_proc_takes_files(), reason="needs a /proc that refuses new files (Linux)")
def test_a_read_only_output_is_refused_before_any_work(setup, monkeypatch, capsys):
    """/proc takes no new files, even from root (these tests run as root, so chmod cannot make a folder read-only)."""
    _no_model_loading(monkeypatch)
    assert main(_args(setup, "/proc/controlcg-out")) == 2
    assert "cannot write into /proc" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_folder_without_write_permission_is_refused(setup, tmp_path, monkeypatch, capsys):
    _no_model_loading(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(_args(setup, locked / "out")) == 2
        assert "cannot write into" in capsys.readouterr().err
    finally:
        locked.chmod(0o755)


def test_a_classifier_of_other_classes_is_refused(setup, tmp_path, capsys):
    ccfg = ClassifierConfig(grid=GRID, init_features=4, growth_rate=4, block_config=(1,), class_names=("CN", "MCI"))
    save_checkpoint(build_classifier(ccfg).eval(), ccfg, tmp_path / "mci")
    args = _args(setup, tmp_path / "out")
    args[args.index("--classifier") + 1] = str(tmp_path / "mci")
    assert main(args) == 2
    assert "the classifier's classes ['CN', 'MCI'] differ from the model's ['CN', 'AD']" in capsys.readouterr().err


def test_an_unknown_target_names_the_known_classes(setup, tmp_path, capsys):
    args = _args(setup, tmp_path / "out")
    args[args.index("--target") + 1] = "MCI"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "MCI" in err and "CN" in err and "AD" in err and not (tmp_path / "out").exists()


def test_results_record_their_provenance_and_repeat_bit_for_bit(setup, tmp_path):
    assert main(_args(setup, tmp_path / "a")) == 0
    assert main(_args(setup, tmp_path / "b")) == 0
    record = json.loads((tmp_path / "a" / "result.json").read_text())
    sha = file_sha256(setup / "model" / WEIGHTS)
    assert record["model_sha256"] == sha and record["settings"]["code_version"] == __version__
    assert record["settings"]["seed"] == 0 and record["settings"]["sampling"]["steps"] == 3
    assert record["settings"]["scan_checks"]["findings"] == [] and record["settings"]["scan_warnings"] == []
    for name in record["files"]:
        if name.endswith(".nii.gz"):
            a, b = (sitk.ReadImage(str(tmp_path / d / name)) for d in "ab")
            np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
    header = sitk.ReadImage(str(tmp_path / "a" / "counterfactual_w2.nii.gz")).GetMetaData("descrip")
    assert header == f"ControlCG {__version__} model {sha[:12]} cf w=2 to AD seed 0"


def test_a_failure_removes_the_folders_the_run_made(setup, tmp_path, monkeypatch, capsys):
    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", disk_full)
    assert main(_args(setup, tmp_path / "new" / "deeper" / "out")) == 2
    assert list(tmp_path.iterdir()) == []  # not even the parents it created


def test_an_unexpected_error_type_is_one_line_too(setup, tmp_path, monkeypatch, capsys):
    import ControlCGLib.pipeline as pipeline

    monkeypatch.setattr(pipeline, "counterfactual", lambda *a, **k: {}["missing key"])
    assert main(_args(setup, tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert "the computation failed (KeyError: 'missing key')" in err and "Traceback" not in err
