"""PySide6 stand-ins for the CTK and qMRML widgets of Resources/UI/ControlCG.ui, so that the module panel can be
loaded (tests) and drawn (docs) without 3D Slicer.

They carry the Qt properties the .ui sets (same names and types as in CTK and Slicer) and look roughly like the real
widgets. The .ui wires the root's mrmlSceneChanged(vtkMRMLScene*) signal to each node combo box's
setMRMLScene(vtkMRMLScene*) slot. "vtkMRMLScene*" is no type Qt knows here, so a signal of exactly that signature can
be connected but never emitted. The stand-ins therefore declare both overloads, (vtkMRMLScene*) for the loader,
which then connects without a warning, and (PyObject) for Python, and `load_ui` wires each such connection of the
.ui again on the PyObject overload: `panel.setMRMLScene(scene)` reaches the combo boxes as it does in Slicer.

    from qt_standins import load_ui
    panel = load_ui("Resources/UI/ControlCG.ui")
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from PySide6.QtCore import Property, QObject, Qt, Signal, Slot
from PySide6.QtGui import QFont, QFontDatabase, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSlider,
    QTableView,
    QToolButton,
    QWidget,
)

SCENE_TYPE = "vtkMRMLScene*"
FONT_FILES = (  # tried in order when Qt finds no font by itself (offscreen platform without fontconfig)
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
)


def _scene_accessors():
    """``mrmlScene()`` and the ``setMRMLScene`` slot of a widget that only keeps the scene it is given, with both
    overloads (module docstring); made here and assigned in each class body, where Qt registers the slot."""

    def mrmlScene(self):
        return self._scene

    @Slot(object)
    @Slot(SCENE_TYPE)
    def setMRMLScene(self, scene) -> None:
        self._scene = scene

    return mrmlScene, setMRMLScene


class qMRMLWidget(QWidget):
    """Root of a Slicer module panel: holds the MRML scene and announces it to its children."""

    mrmlSceneChanged = Signal((object,), (SCENE_TYPE,))

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._scene = None

    def mrmlScene(self):
        return self._scene

    @Slot(object)
    def setMRMLScene(self, scene) -> None:
        self._scene = scene
        self.mrmlSceneChanged[object].emit(scene)


class qMRMLNodeComboBox(QComboBox):
    """A node selector; here a plain combo box whose items are node names (add them with addItem)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._scene = None
        self._node_types: list[str] = []
        self._flags = {"noneEnabled": False, "addEnabled": True, "removeEnabled": True, "showChildNodeTypes": True}
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(8)

    def _get_node_types(self) -> list[str]:
        return list(self._node_types)

    def _set_node_types(self, types) -> None:
        self._node_types = [str(t) for t in types]

    nodeTypes = Property("QStringList", _get_node_types, _set_node_types)

    def _flag(name: str):
        def getter(self) -> bool:
            return self._flags[name]

        def setter(self, value: bool) -> None:
            self._flags[name] = bool(value)

        return Property(bool, getter, setter)

    noneEnabled = _flag("noneEnabled")
    addEnabled = _flag("addEnabled")
    removeEnabled = _flag("removeEnabled")
    showChildNodeTypes = _flag("showChildNodeTypes")
    del _flag

    mrmlScene, setMRMLScene = _scene_accessors()

    def currentNode(self):
        return None


class qMRMLTableView(QTableView):
    """A spreadsheet view of a table node (Libs/MRML/Widgets/qMRMLTableView.h): ``setMRMLTableNode(node)`` shows
    the node's columns and cells, read through the vtkMRMLTableNode methods GetNumberOfColumns, GetColumnName,
    GetNumberOfRows and GetCellText (the stand-in node of slicer_stubs.py has them), each cell as its text."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._scene = None
        self._node = None
        self.setModel(QStandardItemModel(self))
        self.horizontalHeader().setStretchLastSection(False)
        self.verticalHeader().setVisible(True)

    mrmlScene, setMRMLScene = _scene_accessors()

    def mrmlTableNode(self):
        return self._node

    def setMRMLTableNode(self, node) -> None:
        self._node = node
        model = self.model()
        model.clear()
        if node is not None:
            columns = node.GetNumberOfColumns()
            model.setHorizontalHeaderLabels([node.GetColumnName(c) for c in range(columns)])
            for r in range(node.GetNumberOfRows()):
                items = []
                for c in range(columns):
                    item = QStandardItem(node.GetCellText(r, c))
                    if c:  # numbers read right-aligned, as a spreadsheet shows them
                        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    items.append(item)
                model.appendRow(items)
        self.horizontalHeader().setMinimumSectionSize(60)  # as qMRMLTableView::setMRMLTableNode does
        self.resizeColumnsToContents()


class ctkSliderWidget(QWidget):
    """A slider and a spin box showing one floating-point value, as CTK's ctkSliderWidget."""

    valueChanged = Signal(float)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._slider = QSlider(Qt.Orientation.Horizontal, self)
        self._spin = QDoubleSpinBox(self)
        self._spin.setRange(0.0, 99.0)  # CTK's defaults
        self._spin.setDecimals(2)
        self._spin.setSingleStep(1.0)
        self._spin.setKeyboardTracking(False)
        self._page_step = 10.0
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._slider, 1)
        layout.addWidget(self._spin)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._spin.valueChanged.connect(self._spin_changed)
        self._slider.valueChanged.connect(self._slider_changed)
        self._sync_slider()

    # The slider counts single steps from the minimum.
    def _sync_slider(self) -> None:
        step = self._spin.singleStep() or 1.0
        self._slider.blockSignals(True)
        self._slider.setRange(0, round((self._spin.maximum() - self._spin.minimum()) / step))
        self._slider.setPageStep(max(1, round(self._page_step / step)))
        self._slider.setValue(round((self._spin.value() - self._spin.minimum()) / step))
        self._slider.blockSignals(False)

    def _spin_changed(self, value: float) -> None:
        self._sync_slider()
        self.valueChanged.emit(value)

    def _slider_changed(self, position: int) -> None:
        self._spin.setValue(self._spin.minimum() + position * self._spin.singleStep())

    def _get_minimum(self) -> float:
        return self._spin.minimum()

    def _set_minimum(self, value: float) -> None:
        self._spin.setMinimum(value)
        self._sync_slider()

    def _get_maximum(self) -> float:
        return self._spin.maximum()

    def _set_maximum(self, value: float) -> None:
        self._spin.setMaximum(value)
        self._sync_slider()

    def _get_single_step(self) -> float:
        return self._spin.singleStep()

    def _set_single_step(self, value: float) -> None:
        self._spin.setSingleStep(value)
        self._sync_slider()

    def _get_page_step(self) -> float:
        return self._page_step

    def _set_page_step(self, value: float) -> None:
        self._page_step = float(value)
        self._sync_slider()

    def _get_decimals(self) -> int:
        return self._spin.decimals()

    def _set_decimals(self, value: int) -> None:
        self._spin.setDecimals(int(value))

    def _get_value(self) -> float:
        return self._spin.value()

    def _set_value(self, value: float) -> None:
        self._spin.setValue(value)
        self._sync_slider()

    minimum = Property(float, _get_minimum, _set_minimum)
    maximum = Property(float, _get_maximum, _set_maximum)
    singleStep = Property(float, _get_single_step, _set_single_step)
    pageStep = Property(float, _get_page_step, _set_page_step)
    decimals = Property(int, _get_decimals, _set_decimals)
    value = Property(float, _get_value, _set_value, notify=valueChanged)


class ctkPathLineEdit(QWidget):
    """A line edit holding a path, with a "..." browse button."""

    currentPathChanged = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._edit = QLineEdit(self)
        self._browse = QToolButton(self)
        self._browse.setText("...")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self._edit, 1)
        layout.addWidget(self._browse)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._edit.textChanged.connect(self.currentPathChanged)

    def _get_path(self) -> str:
        return self._edit.text()

    def _set_path(self, path: str) -> None:
        self._edit.setText(str(path))

    currentPath = Property(str, _get_path, _set_path, notify=currentPathChanged)


class ctkCollapsibleButton(QWidget):
    """A full-width button header (arrow + text) above the contents; clicking it collapses the contents.

    The .ui gives this widget its own layout; the header is a child outside that layout, kept above it by a top
    contents margin.
    """

    contentsCollapsed = Signal(bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._text = ""
        self._collapsed = False
        self._header = QPushButton(self)
        self._header.setCheckable(True)
        self._header.setChecked(True)
        self._header.setStyleSheet("QPushButton { text-align: left; padding: 3px 6px; }")
        self._header.toggled.connect(lambda checked: self._set_collapsed(not checked))
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self._update_header()

    def _header_height(self) -> int:
        return self._header.sizeHint().height()

    def _update_header(self) -> None:
        arrow = "\u25b8" if self._collapsed else "\u25be"  # small right / down triangles
        self._header.setText(f"{arrow}  {self._text}")
        self._header.blockSignals(True)
        self._header.setChecked(not self._collapsed)
        self._header.blockSignals(False)
        margins = self.contentsMargins()
        self.setContentsMargins(margins.left(), self._header_height() + 4, margins.right(), margins.bottom())
        for child in self.findChildren(QWidget, options=Qt.FindChildOption.FindDirectChildrenOnly):
            if child is not self._header:
                self._set_child_visibility(child)
        self.setMaximumHeight(self._header_height() if self._collapsed else 16777215)
        self.updateGeometry()

    def _set_child_visibility(self, child: QWidget) -> None:
        """Hide the contents while collapsed; a child the code hid itself stays hidden when expanded (as
        ctkCollapsibleButtonPrivate::setChildVisibility keeps a widget explicitly hidden)."""
        if self._collapsed:
            if not child.isHidden():
                child.setProperty("hiddenByCollapse", True)
                child.setVisible(False)
            return
        explicitly_hidden = child.isHidden() and child.testAttribute(Qt.WidgetAttribute.WA_WState_ExplicitShowHide)
        if not explicitly_hidden or child.property("hiddenByCollapse"):
            child.setProperty("hiddenByCollapse", False)
            child.setVisible(True)

    def resizeEvent(self, event) -> None:
        self._header.setGeometry(0, 0, self.width(), self._header_height())
        super().resizeEvent(event)

    def showEvent(self, event) -> None:
        self._update_header()  # the contents were added after construction
        super().showEvent(event)

    def _get_text(self) -> str:
        return self._text

    def _set_text(self, text: str) -> None:
        self._text = str(text)
        self._update_header()

    def _get_collapsed(self) -> bool:
        return self._collapsed

    def _set_collapsed(self, collapsed: bool) -> None:
        collapsed = bool(collapsed)
        if collapsed != self._collapsed:
            self._collapsed = collapsed
            self._update_header()
            self.contentsCollapsed.emit(collapsed)

    text = Property(str, _get_text, _set_text)
    collapsed = Property(bool, _get_collapsed, _set_collapsed, notify=contentsCollapsed)


STANDINS = (ctkCollapsibleButton, ctkSliderWidget, ctkPathLineEdit, qMRMLNodeComboBox, qMRMLTableView, qMRMLWidget)
_app: QApplication | None = None


def application() -> QApplication:
    """The QApplication (made offscreen if there is none yet), with a readable font when Qt found none."""
    global _app
    app = QApplication.instance()
    if app is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = _app = QApplication([])
        if not QFontDatabase.families():
            for path in FONT_FILES:
                if Path(path).is_file() and QFontDatabase.addApplicationFont(path) >= 0:
                    break
        families = QFontDatabase.families()
        for family in ("DejaVu Sans", "Liberation Sans", "Noto Sans"):
            if family in families:
                app.setFont(QFont(family, 9))
                break
    if not isinstance(app, QApplication):
        raise RuntimeError(f"widgets need a QApplication, but this process already runs a {type(app).__name__}")
    return app


def _wire_scene_connections(root: QWidget, ui_path: Path) -> None:
    """Connect again, on the PyObject overloads, the .ui's connections whose signature names vtkMRMLScene*."""
    for connection in ET.parse(ui_path).getroot().iter("connection"):
        fields = {child.tag: (child.text or "").strip() for child in connection}
        if SCENE_TYPE not in fields.get("signal", "") + fields.get("slot", ""):
            continue
        ends = []
        for name in (fields["sender"], fields["receiver"]):
            end = root if root.objectName() == name else root.findChild(QObject, name)
            if end is None:
                raise RuntimeError(f"{ui_path}: connection names a missing object {name!r}")
            ends.append(end)
        sender, receiver = ends
        signal = getattr(sender, fields["signal"].split("(")[0])
        signal[object].connect(getattr(receiver, fields["slot"].split("(")[0]))


def load_ui(path: str | os.PathLike) -> QWidget:
    """Load a Slicer module .ui with the stand-ins (offscreen when no QApplication exists yet)."""
    from PySide6.QtUiTools import QUiLoader

    application()
    path = Path(path)
    loader = QUiLoader()
    for cls in STANDINS:
        loader.registerCustomWidget(cls)
    widget = loader.load(str(path))
    if widget is None:
        raise RuntimeError(f"QUiLoader could not load {path}: {loader.errorString()}")
    _wire_scene_connections(widget, path)
    return widget
