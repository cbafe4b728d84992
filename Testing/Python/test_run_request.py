"""RunRequest, the one request of a ``controlcg counterfactual`` run: ``to_argv`` writes the arguments that the real
parser reads back, through ``from_args``, to the same request -- the Slicer panel launches exactly that command line.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from ControlCGLib.cli import build_parser
from ControlCGLib.run_request import RunRequest

BASE = RunRequest(input="t1.nii.gz", target="AD", out="out")
EVERY_FIELD = RunRequest(
    input="/scans/patient 1/t1.nii.gz",
    target="CN",
    out="/results/run 1",
    scales=(0.0, 2.5, 10.0),
    series="1.2.840.113619.2",
    model="/models/diffusion",
    classifier="/models/classifier",
    no_classifier=True,
    source="AD",
    preprocessed=True,
    accept_unusual=True,
    steps=37,
    solver="ddim",
    spacing="time",
    kv_stride=3,
    start_strength=0.65,
    injection="on",
    blend=True,
    seed=12345,
    threads=5,
    overwrite=True,
    device="cpu",
    precision="bf16",
    montage=False,
    progress_lines=True,
    cancel_file="/tmp/cancel.flag",
    pid_file="/tmp/worker.pid",
)


def _parsed(request: RunRequest) -> RunRequest:
    return RunRequest.from_args(build_parser().parse_args(request.to_argv()), request.input)


@pytest.mark.parametrize(
    "request_",
    [
        BASE,
        EVERY_FIELD,
        dataclasses.replace(BASE, blend=False),
        dataclasses.replace(BASE, source=None),
        dataclasses.replace(BASE, scales=(2.5,)),
        dataclasses.replace(BASE, scales=(0.1, 1 / 3), start_strength=0.123456789),  # more digits than "%g" keeps
        dataclasses.replace(EVERY_FIELD, solver="dpm++2m", spacing="log-snr", injection="off", blend=False),
    ],
    ids=["defaults", "every-field", "no-blend", "unpaired", "float-w", "long-floats", "other-choices"],
)
def test_the_command_line_parses_back_to_the_request(request_):
    assert _parsed(request_) == request_


def test_defaults_leave_the_sampling_to_the_product():
    argv = BASE.to_argv()
    for option in ("--steps", "--solver", "--spacing", "--kv-stride", "--start-strength", "--injection", "--blend"):
        assert option not in argv
    assert "--no-blend" not in argv and BASE.sampling_changes() == {}
    assert argv[:2] == ["counterfactual", "t1.nii.gz"] and argv[argv.index("--source") + 1] == "auto"
    assert dataclasses.replace(BASE, source=None).to_argv()[argv.index("--source") + 1] == "none"
    assert EVERY_FIELD.sampling_changes() == {
        "steps": 37,
        "solver": "ddim",
        "spacing": "time",
        "kv_stride": 3,
        "start_strength": 0.65,
        "injection": "on",
        "blend": True,
    }


def test_scales_are_spelled_as_result_keys_when_exact():
    argv = dataclasses.replace(BASE, scales=(0.0, 2.5, 4.0)).to_argv()
    assert argv[argv.index("--w") + 1 : argv.index("--source")] == ["0", "2.5", "4"]


@pytest.mark.parametrize(
    "change, option",
    [
        ({"steps": 0}, "--steps"),
        ({"start_strength": 2.0}, "--start-strength"),
        ({"kv_stride": 0}, "--kv-stride"),
        ({"scales": (11.0,)}, "--w"),
        ({"seed": -1}, "--seed"),
        ({"threads": 0}, "--threads"),
        ({"solver": "euler"}, "--solver"),
        ({"spacing": "cubic"}, "--spacing"),
        ({"injection": "maybe"}, "--injection"),
    ],
)
def test_a_bad_value_is_refused_naming_its_option(change, option):
    with pytest.raises(ValueError, match=option):
        dataclasses.replace(BASE, **change)


def test_a_bad_value_on_the_command_line_is_refused_naming_its_option(capsys):
    argv = [*BASE.to_argv(), "--steps", "0"]
    with pytest.raises(ValueError, match="--steps"):
        RunRequest.from_args(build_parser().parse_args(argv), BASE.input)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*BASE.to_argv(), "--solver", "euler"])
    assert "--solver" in capsys.readouterr().err


def test_no_w_is_refused():
    with pytest.raises(ValueError, match="no w value"):
        dataclasses.replace(BASE, scales=())


def test_the_request_imports_no_torch():
    """The Slicer panel builds requests before torch is installed."""
    code = "import sys; import ControlCGLib.run_request; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
