"""Draw the ControlCG module panel (Resources/UI/ControlCG.ui) as it looks after a finished run, without 3D Slicer:
the CTK and qMRML widgets are the PySide6 stand-ins of qt_standins.py, the values are typed in here.

Run from the repository root: python Testing/Python/render_panel.py --out docs/images/slicer_panel.png
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


def finished_run(panel: QWidget) -> None:
    """Fill the panel as the module leaves it after sweeping w toward AD on the bundled sample."""

    def ui(name: str) -> QWidget:
        widget = panel.findChild(QWidget, name)
        if widget is None:
            raise KeyError(f"{UI} has no widget {name!r}")
        return widget

    ui("inputSelector").addItem("sample_T1")
    ui("targetClassComboBox").addItems(["CN", "AD"])
    ui("targetClassComboBox").setCurrentText("AD")
    ui("deviceComboBox").addItems(["auto", "cpu", "cuda"])
    ui("sweepLabel").setText("0, 2, 4, 6, 8, 10")
    ui("inputVerdictLabel").setText("CN 1.00 \u00b7 AD 0.00")
    ui("counterfactualVerdictLabel").setText("w=4: AD 1.00 \u00b7 CN 0.00")
    ui("advancedCollapsibleButton").collapsed = False
    ui("applyButton").setEnabled(True)
    ui("progressBar").setValue(100)
    ui("statusLabel").setText("Done in 29 s: 6 counterfactuals toward AD. Drag w to switch between them.")


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
    args = parser.parse_args(argv)
    print(render(args.out, args.width))


if __name__ == "__main__":
    main()
