"""Draw the ControlCG module panel (Resources/UI/ControlCG.ui) as it looks after a finished run, without 3D Slicer:
the CTK and qMRML widgets are the PySide6 stand-ins of qt_standins.py. With --run, the labels are filled from a real
result folder in the module's words (slicer_bridge) and the regional volume table is the table node the module's own
Logic fills (ControlCG.py's updateVolumesTable, run on the stand-in scene of slicer_stubs.py).

Run from the repository root:
    python Testing/Python/render_panel.py --run RUN_DIR --w 4 --seconds S --out docs/images/slicer_panel.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from PySide6.QtCore import Qt, QtMsgType, qInstallMessageHandler  # noqa: E402
from PySide6.QtWidgets import QWidget  # noqa: E402
from qt_standins import load_ui  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "Resources" / "UI" / "ControlCG.ui"
SPACER_TRIM = 30  # most of the bottom spacer's height: empty in the picture


def quiet_offscreen(kind: QtMsgType, context, message: str) -> None:
    """Print Qt's messages except the offscreen platform's note that it cannot size windows."""
    if "propagateSizeHints" not in message:
        print(message, file=sys.stderr)


RUN_TEXTS: dict[str, str] = {  # set by --run from a real result folder; without one the panel shows no numbers
    "sweepLabel": "0, 2, 4, 6, 8, 10",
    "statusLabel": "6 counterfactual(s) toward AD. Drag w to switch between results.",
}
RUN_SWEEP: dict[str, object] = {}  # --run: the sweep JSON the module keeps and the w shown, for the volume table


def run_texts() -> dict[str, str]:
    return dict(RUN_TEXTS)


def texts_from_run(run_dir: Path, w: float, seconds: float) -> dict[str, str]:
    """The labels as the module fills them from a run's result.json (slicer_bridge's words; ControlCG.py's status
    message after a run that took ``seconds``)."""
    import dataclasses

    from ControlCGLib import slicer_bridge as bridge
    from ControlCGLib.defaults import w_key
    from ControlCGLib.outputs import read_record

    record = read_record(run_dir)
    key = w_key(w)
    computed = record.scales
    texts = {
        "sweepLabel": ", ".join(f"{v:g}" for v in computed),
        "sweepLineEdit": " ".join(w_key(v) for v in computed),
        "statusLabel": f"{len(computed)} counterfactual(s) toward {record.target} ({seconds:.0f} s). "
        "Drag w to switch between results.",
        "inputVerdictLabel": bridge.format_verdict(record.input_verdict),
        "counterfactualVerdictLabel": f"w={w:g}: {bridge.format_verdict(record.verdicts.get(key, {}))}",
        "pairingLabel": bridge.format_pairing(record.source, record.target, record.input_verdict),
        "classifierNoteLabel": bridge.classifier_note(record.classifier_sha256),
    }
    raw = record.raw_verdicts.get(key)
    texts["rawVerdictLabel"] = f"w={w:g}: {bridge.format_verdict(raw)}" if raw else "-"
    if record.volumes.get(key):
        texts["volumesLabel"] = f"At w={w:g}, toward {record.target}: atlas regions scaled to this head"
    sweep = bridge.SweepResults(
        "input", record.target, record.source, record.input_verdict, record.verdicts, record.raw_verdicts
    )
    RUN_SWEEP.update(
        sweep=dataclasses.replace(sweep, volumes=record.volumes, classifier_note=texts["classifierNoteLabel"]),
        w=w,
    )
    return texts


def module_volume_table(sweep, w: float):
    """The regional volume table node as the module's Logic fills it (ControlCG.py on slicer_stubs' scene)."""
    import importlib.util

    import slicer_stubs

    slicer = slicer_stubs.install()
    spec = importlib.util.spec_from_file_location("ControlCG_for_picture", ROOT / "ControlCG" / "ControlCG.py")
    controlcg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(controlcg)
    logic = controlcg.ControlCGLogic()
    p = logic.getParameterNode()
    p.inputVolume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "sample_T1")
    p.volumesTable = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "volumes")
    p.results = sweep.to_json()
    logic.updateVolumesTable(p, w)
    return p.volumesTable


def finished_run(panel: QWidget) -> None:
    """Fill the panel as the module leaves it after sweeping w toward AD on the bundled sample."""

    def ui(name: str) -> QWidget:
        widget = panel.findChild(QWidget, name)
        if widget is None:
            raise KeyError(f"{UI} has no widget {name!r}")
        return widget

    from ControlCGLib import slicer_bridge as bridge

    ui("inputSelector").addItem("sample_T1")
    ui("targetClassComboBox").addItems(["CN", "AD"])
    ui("targetClassComboBox").setCurrentText("AD")
    sweep = RUN_SWEEP.get("sweep")
    choices = [text for _, text in bridge.source_choices(["CN", "AD"])]
    choices[0] = bridge.verdict_choice_text(sweep.input_verdict if sweep else {})  # as the module renames it
    ui("sourceComboBox").addItems(choices)
    ui("deviceComboBox").addItems(["auto", "cpu", "cuda"])
    ui("backgroundComboBox").addItems(["counterfactual", "raw model output", "input scan"])  # the Choice's values
    ui("overlayComboBox").addItems(["saliency", "volume change"])
    for name, text in run_texts().items():
        ui(name).setText(text)
    if sweep is not None:
        ui("volumesTableView").setMRMLTableNode(module_volume_table(sweep, RUN_SWEEP["w"]))
    other = sweep.other_direction() if sweep else None
    ui("otherDirectionButton").setVisible(other is not None)  # the module shows it only when it has one to offer
    ui("advancedCollapsibleButton").collapsed = False
    ui("applyButton").setEnabled(True)
    ui("progressBar").setValue(100)


def render(out: Path, width: int = 420) -> Path:
    qInstallMessageHandler(quiet_offscreen)
    panel = load_ui(UI)
    finished_run(panel)
    panel.setWindowTitle("ControlCG")
    panel.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen)
    panel.show()  # lays out the collapsible buttons' contents
    width = max(width, panel.minimumSizeHint().width())  # the longest check box text sets a floor
    height = panel.heightForWidth(width) if panel.hasHeightForWidth() else panel.sizeHint().height()
    panel.resize(width, height - SPACER_TRIM)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(out)):
        raise OSError(f"could not write {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "slicer_panel.png")
    parser.add_argument("--width", type=int, default=420, help="panel width in pixels")
    parser.add_argument("--run", type=Path, help="a `controlcg counterfactual` result folder to take the labels from")
    parser.add_argument("--w", type=float, default=4.0, help="the w shown (with --run)")
    parser.add_argument("--seconds", type=float, default=0.0, help="the run's wall time, for the status line")
    args = parser.parse_args(argv)
    if args.run:
        RUN_TEXTS.update(texts_from_run(args.run, args.w, args.seconds))
    print(render(args.out, args.width))


if __name__ == "__main__":
    main()
