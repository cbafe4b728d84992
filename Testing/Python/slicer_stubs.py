"""Stand-ins for Slicer's ``slicer``, ``qt``, ``ctk`` and ``vtk`` modules, so that tests can import and drive
ControlCG.py outside Slicer.

They imitate, in plain Python, just the behaviour the module's Logic relies on -- a scene of nodes, volumes with a
(K, J, I) array and an IJK->RAS matrix, sequences that deep-copy their items, a browser with proxy nodes, colour
tables, and ``slicer.util.launchConsoleProcess(blocking=False)`` with its callbacks delivered from the event loop
(``slicer.app.processEvents``), as Slicer 5.12's util.py does. They are not Slicer: every Slicer name the module uses
is checked against Slicer's own source separately (test_slicer_names.py). ``slicer.util`` is strict (an unknown name
raises), node classes only have the methods written here, so a typo in the module fails a test instead of passing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import subprocess
import sys
import threading
import time
import types
import unittest
import xml.etree.ElementTree as ET

import numpy as np


class _Anything:
    """An attribute sink for Qt/CTK names the Logic does not depend on (qt.QIcon, ctk.ctkPathLineEdit.Dirs...)."""

    def __init__(self, name="stub"):
        self._name = name

    def __getattr__(self, item):
        return _Anything(f"{self._name}.{item}")

    def __call__(self, *args, **kwargs):
        return _Anything(f"{self._name}()")

    def __or__(self, other):
        return self


class _LooseModule(types.ModuleType):
    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        value = _Anything(f"{self.__name__}.{item}")
        setattr(self, item, value)
        return value


# --- event loop: QTimer.singleShot and processEvents ---------------------------------------------------------------

_timers: list[tuple[float, int, object]] = []
_counter = itertools.count()


def single_shot(msec, callback):
    _timers.append((time.monotonic() + msec / 1000.0, next(_counter), callback))


def process_events():
    now = time.monotonic()
    due = sorted(t for t in _timers if t[0] <= now)
    for entry in due:
        _timers.remove(entry)
        entry[2]()


# --- VTK / MRML -------------------------------------------------------------------------------------------------------


class vtkMatrix4x4:
    def __init__(self):
        self.a = np.eye(4)


class _ImageData:
    def __init__(self, components=1):
        self.components = components

    def GetNumberOfScalarComponents(self):
        return self.components


class vtkMRMLNode:
    _classes = ("vtkMRMLNode",)

    def __init__(self):
        self._id = None
        self._name = ""
        self._attributes = {}
        self.scene = None

    def GetID(self):
        return self._id

    def GetName(self):
        return self._name

    def SetName(self, name):
        self._name = name

    def SetAttribute(self, key, value):
        self._attributes[key] = value

    def GetAttribute(self, key):
        return self._attributes.get(key)

    def IsA(self, class_name):
        return class_name in type(self)._classes

    def StartModify(self):
        return 0

    def EndModify(self, previous):
        return previous


class vtkMRMLScalarVolumeDisplayNode(vtkMRMLNode):
    _classes = ("vtkMRMLNode", "vtkMRMLDisplayNode", "vtkMRMLScalarVolumeDisplayNode")

    def __init__(self):
        super().__init__()
        self.auto_window_level = True
        self.window = None
        self.color_node_id = None

    def AutoWindowLevelOff(self):
        self.auto_window_level = False

    def SetWindowLevelMinMax(self, lo, hi):
        self.window = (lo, hi)

    def SetAndObserveColorNodeID(self, node_id):
        self.color_node_id = node_id


class vtkMRMLScalarVolumeNode(vtkMRMLNode):
    _classes = ("vtkMRMLNode", "vtkMRMLVolumeNode", "vtkMRMLScalarVolumeNode")

    def __init__(self):
        super().__init__()
        self.array = None
        self.ijk_to_ras = np.eye(4)
        self.transform_id = None
        self.display = None
        self.components = 1

    def GetImageData(self):
        return None if self.array is None else _ImageData(self.components)

    def GetIJKToRASMatrix(self, matrix):
        matrix.a = self.ijk_to_ras.copy()

    def CopyOrientation(self, other):
        self.ijk_to_ras = other.ijk_to_ras.copy()

    def GetTransformNodeID(self):
        return self.transform_id

    def SetAndObserveTransformNodeID(self, node_id):
        self.transform_id = node_id

    def CreateDefaultDisplayNodes(self):
        if self.display is None:
            self.display = vtkMRMLScalarVolumeDisplayNode()

    def GetDisplayNode(self):
        return self.display

    def copy_content_from(self, other):
        self.array = None if other.array is None else other.array.copy()
        self.ijk_to_ras = other.ijk_to_ras.copy()
        self._name = other._name
        self._attributes = dict(other._attributes)


class vtkMRMLLabelMapVolumeNode(vtkMRMLScalarVolumeNode):
    _classes = (*vtkMRMLScalarVolumeNode._classes, "vtkMRMLLabelMapVolumeNode")


class vtkMRMLSequenceNode(vtkMRMLNode):
    _classes = ("vtkMRMLNode", "vtkMRMLSequenceNode")

    def __init__(self):
        super().__init__()
        self.index_name = ""
        self.index_unit = ""
        self.items: list[tuple[str, vtkMRMLScalarVolumeNode]] = []

    def SetIndexName(self, name):
        self.index_name = name

    def SetIndexUnit(self, unit):
        self.index_unit = unit

    def SetDataNodeAtValue(self, node, value):
        """Deep copy, inserted in numeric order (the default numeric index), replacing an equal value."""
        copy = type(node)()
        copy.copy_content_from(node)
        self.items = [(v, n) for v, n in self.items if abs(float(v) - float(value)) > 1e-3]
        self.items.append((value, copy))
        self.items.sort(key=lambda item: float(item[0]))
        return copy

    def GetNumberOfDataNodes(self):
        return len(self.items)

    def GetNthDataNode(self, i):
        return self.items[i][1]

    def GetItemNumberFromIndexValue(self, value, exact=True):
        for i, (v, _) in enumerate(self.items):
            if abs(float(v) - float(value)) <= 1e-3:
                return i
        return -1


class vtkMRMLSequenceBrowserNode(vtkMRMLNode):
    _classes = ("vtkMRMLNode", "vtkMRMLSequenceBrowserNode")

    def __init__(self):
        super().__init__()
        self.sequences = []
        self.proxies = {}
        self.selected = -1
        self.overwrite_name = {}
        self.save_changes = {}

    def AddSynchronizedSequenceNode(self, sequence):
        self.sequences.append(sequence)
        proxy = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", sequence.GetName())
        self.proxies[sequence.GetID()] = proxy
        return sequence.GetID()

    def SetOverwriteProxyName(self, sequence, value):
        self.overwrite_name[sequence.GetID()] = value

    def SetSaveChanges(self, sequence, value):
        self.save_changes[sequence.GetID()] = value

    def SetPlaybackRateFps(self, fps):
        self.fps = fps

    def SetPlaybackLooped(self, looped):
        self.looped = looped

    def GetProxyNode(self, sequence):
        return self.proxies.get(sequence.GetID())

    def SetSelectedItemNumber(self, i):
        self.selected = i
        for sequence in self.sequences:
            proxy = self.proxies[sequence.GetID()]
            name = proxy.GetName()
            proxy.copy_content_from(sequence.GetNthDataNode(i))
            if not self.overwrite_name.get(sequence.GetID()):
                proxy.SetName(name)


class vtkMRMLColorTableNode(vtkMRMLNode):
    _classes = ("vtkMRMLNode", "vtkMRMLColorNode", "vtkMRMLColorTableNode")

    def __init__(self):
        super().__init__()
        self.user = False
        self.colors = []

    def SetTypeToUser(self):
        self.user = True

    def SetNumberOfColors(self, n):
        self.colors = [None] * n

    def SetColor(self, i, r, g, b, a):
        assert self.user, "only a User table can be edited"
        self.colors[i] = (r, g, b, a)
        return 1


class vtkMRMLScriptedModuleNode(vtkMRMLNode):
    _classes = ("vtkMRMLNode", "vtkMRMLScriptedModuleNode")


class vtkAbstractArray:
    """A VTK column: a name and values (vtkStringArray when made by vtkMRMLTableNode.AddColumn())."""

    def __init__(self, values=None):
        self.name = None
        self.values = list(values or [])

    def SetName(self, name):
        self.name = name

    def GetName(self):
        return self.name

    def SetValue(self, index, value):
        self.values[index] = self._convert(value)

    def GetValue(self, index):
        return self.values[index]

    @staticmethod
    def _convert(value):
        return str(value)

    @staticmethod
    def _empty():
        return ""


class vtkDoubleArray(vtkAbstractArray):
    @staticmethod
    def _convert(value):
        return float(value)

    @staticmethod
    def _empty():
        return 0.0


class vtkMRMLTableNode(vtkMRMLNode):
    """Columns of values, as Libs/MRML/Core/vtkMRMLTableNode.cxx keeps them in its vtkTable: AddColumn() makes a
    string column, AddColumn(array) takes the array, AddEmptyRow() extends every column, GetCellText() gives the
    value as vtkVariant::ToString() does (6 significant digits for a double)."""

    _classes = ("vtkMRMLNode", "vtkMRMLStorableNode", "vtkMRMLTableNode")

    def __init__(self):
        super().__init__()
        self.columns: list[vtkAbstractArray] = []
        self.properties: dict[tuple[str, str], str] = {}
        self.locked = False
        self.modified = 0

    def RemoveAllColumns(self):
        self.columns, self.properties = [], {}
        return True

    def AddColumn(self, column=None):
        column = column if column is not None else vtkAbstractArray()
        column.values = [column._empty()] * self.GetNumberOfRows()
        self.columns.append(column)
        return column

    def AddEmptyRow(self):
        for column in self.columns:
            column.values.append(column._empty())
        return self.GetNumberOfRows() - 1

    def GetTable(self):
        return types.SimpleNamespace(GetColumn=lambda i: self.columns[i])

    def GetNumberOfRows(self):
        return len(self.columns[0].values) if self.columns else 0

    def GetNumberOfColumns(self):
        return len(self.columns)

    def GetColumnName(self, i):
        return self.columns[i].name

    def GetCellText(self, row, column):
        value = self.columns[column].values[row]
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    def SetColumnUnitLabel(self, name, unit):
        self.properties[(name, "unitLabel")] = unit

    def SetColumnDescription(self, name, description):
        self.properties[(name, "description")] = description

    def SetLocked(self, locked):
        self.locked = bool(locked)

    def Modified(self):
        self.modified += 1


_NODE_CLASSES = {
    cls.__name__: cls
    for cls in (
        vtkMRMLScalarVolumeNode,
        vtkMRMLLabelMapVolumeNode,
        vtkMRMLSequenceNode,
        vtkMRMLSequenceBrowserNode,
        vtkMRMLColorTableNode,
        vtkMRMLScriptedModuleNode,
        vtkMRMLTableNode,
    )
}


class Scene:
    StartCloseEvent = "StartCloseEvent"
    EndCloseEvent = "EndCloseEvent"

    def __init__(self):
        self.nodes = []
        self._ids = itertools.count(1)

    def AddNewNodeByClass(self, class_name, name=""):
        node = _NODE_CLASSES[class_name]()
        node._id = f"{class_name}{next(self._ids)}"
        node._name = name
        node.scene = self
        self.nodes.append(node)
        return node

    def GenerateUniqueName(self, base):
        names = {n.GetName() for n in self.nodes}
        if base not in names:
            return base
        return next(f"{base}_{i}" for i in itertools.count(1) if f"{base}_{i}" not in names)

    def GetFirstNodeByName(self, name):
        return next((n for n in self.nodes if n.GetName() == name), None)

    def GetFirstNodeByClass(self, class_name):
        return next((n for n in self.nodes if n.IsA(class_name)), None)

    def GetNumberOfNodes(self):
        return len(self.nodes)

    def RemoveNode(self, node):
        self.nodes.remove(node)

    def Clear(self, remove_singletons=0):
        self.nodes.clear()


class SubjectHierarchy:
    """Items for volumes only (no plugin takes sequences or browsers), all under one study."""

    def __init__(self, scene):
        self.scene = scene
        self.parents = {}

    @staticmethod
    def GetSubjectHierarchyNode(scene):
        if not hasattr(scene, "_sh"):
            scene._sh = SubjectHierarchy(scene)
        return scene._sh

    def GetItemByDataNode(self, node):
        if node is None or not node.IsA("vtkMRMLVolumeNode"):
            return 0
        return 1000 + self.scene.nodes.index(node)

    def GetItemParent(self, item):
        return self.parents.get(item, 1)  # 1 = the study

    def SetItemParent(self, item, parent):
        assert item, "Invalid item ID given"
        self.parents[item] = parent


# --- the panel: widgets of Resources/UI/ControlCG.ui as plain Python objects -----------------------------------------


def _arity(slot, given):
    import inspect

    parameters = inspect.signature(slot).parameters.values()
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return given
    return min(given, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters))


class FakeWidget:
    """A widget of the .ui: settable properties as attributes, PythonQt-style ``connect("signal(args)", slot)``, and
    ``emit`` to play a signal (blocked while ``blockSignals(True)``)."""

    def __init__(self, name="", class_name="QWidget"):
        self.objectName = name
        self.className = class_name
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self.text = ""
        self._slots: dict[str, list] = {}
        self._blocked = False

    def connect(self, signal, slot):
        self._slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        """Call the connected slots; as PythonQt does, a slot that takes fewer arguments than the signal carries gets
        the first ones only (Slicer's module template connects clicked(bool) to a slot without arguments)."""
        if not self._blocked:
            for slot in list(self._slots.get(signal, [])):
                slot(*args[: _arity(slot, len(args))])

    def blockSignals(self, blocked):
        previous, self._blocked = self._blocked, bool(blocked)
        return previous

    def setMRMLScene(self, scene):
        self.scene = scene


class FakeComboBox(FakeWidget):
    def __init__(self, name="", class_name="QComboBox"):
        super().__init__(name, class_name)
        self.items: list[str] = []
        self._index = -1

    @property
    def count(self):
        return len(self.items)

    @property
    def currentText(self):
        return self.items[self._index] if 0 <= self._index < len(self.items) else ""

    def addItem(self, text):
        self.items.append(text)
        if self._index < 0:
            self.currentIndex = 0

    def clear(self):
        self.items, self._index = [], -1

    def findText(self, text):
        return self.items.index(text) if text in self.items else -1

    def setItemText(self, index, text):
        self.items[index] = text

    @property
    def currentIndex(self):
        return self._index

    @currentIndex.setter
    def currentIndex(self, index):
        changed = index != self._index
        self._index = index
        if changed:
            self.emit("currentIndexChanged(int)", index)
            self.emit("currentTextChanged(QString)", self.currentText)


class FakePathLineEdit(FakeWidget):
    """ctkPathLineEdit as CTK at Slicer 5.12.3's pinned revision behaves (Libs/Widgets/ctkPathLineEdit.cpp,
    Libs/Core/ctkUtils.cpp): every text change runs updateHasValidInput(), which emits currentPathChanged(path) only
    for acceptable text -- with no name filters the validator's pattern is ".+", so never for an empty field -- and
    validInputChanged(bool) when acceptability flips. ``writes`` counts the texts set by code (``currentPath = ...``);
    ``type`` and ``clear_by_user`` are the user's keystrokes."""

    def __init__(self, name="", class_name="ctkPathLineEdit"):
        super().__init__(name, class_name)
        self._text = ""
        self._valid = False  # the constructor sets an empty path before connecting its slots
        self.writes = 0
        self.filters = None

    @property
    def currentPath(self):
        return self._text

    @currentPath.setter
    def currentPath(self, path):
        self.writes += 1
        self._text_changed(str(path))

    def type(self, characters):
        for c in characters:
            self._text_changed(self._text + c)

    def clear_by_user(self):
        self._text_changed("")

    def _text_changed(self, text):
        self._text = text
        valid = len(text) > 0
        if valid:
            self.emit("currentPathChanged(QString)", text)
        if valid != self._valid:
            self._valid = valid
            self.emit("validInputChanged(bool)", valid)


class FakeTableView(FakeWidget):
    """qMRMLTableView: shows the table node it is given (setMRMLTableNode, Libs/MRML/Widgets/qMRMLTableView.h)."""

    def __init__(self, name="", class_name="qMRMLTableView"):
        super().__init__(name, class_name)
        self.table = None
        self.sets = 0

    def setMRMLTableNode(self, node):
        self.table, self.sets = node, self.sets + 1

    def mrmlTableNode(self):
        return self.table


_WIDGET_CLASSES = {"QComboBox": FakeComboBox, "ctkPathLineEdit": FakePathLineEdit, "qMRMLTableView": FakeTableView}


def _load_ui(path):
    """slicer.util.loadUI: the root widget, with every named widget of the .ui as a fake of its class."""
    root = FakeWidget("root", "qMRMLWidget")
    root.children = {}
    for element in ET.parse(path).getroot().iter("widget"):
        cls = _WIDGET_CLASSES.get(element.get("class"), FakeWidget)
        root.children[element.get("name")] = cls(element.get("name"), element.get("class"))
    _state["ui"] = root
    return root


def _child_widget_variables(widget):
    return types.SimpleNamespace(**widget.children)


@contextlib.contextmanager
def _wait_cursor(show=True):
    _state["wait_cursor"] = _state.get("wait_cursor", 0) + 1
    try:
        yield
    finally:
        _state["wait_cursor"] -= 1


def _display(kind):
    def show(text, windowTitle=None, **kwargs):
        _state.setdefault("dialogs", []).append((kind, text))

    return show


def _add_volume_from_array(narray, ijkToRAS=None, name=None, nodeClassName=None):
    node = _state["scene"].AddNewNodeByClass(nodeClassName or "vtkMRMLScalarVolumeNode", name or "")
    node.array = np.array(narray, copy=True)
    if ijkToRAS is not None:
        node.ijk_to_ras = np.array(ijkToRAS, dtype=float)
    node.CreateDefaultDisplayNodes()
    return node


def _load_volume(filename, properties=None, returnNode=False):
    """slicer.util.loadVolume: the file's voxels as (K, J, I) and its IJK->RAS, as Slicer's reader gives them."""
    import SimpleITK as sitk

    from ControlCGLib.slicer_bridge import array_from_image

    properties = properties or {}
    name = properties.get("name") or os.path.basename(str(filename)).split(".")[0]
    image = sitk.ReadImage(str(filename))
    array, ijk_to_ras = array_from_image(image)
    node = _state["scene"].AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.array = sitk.GetArrayFromImage(image)  # the file's own type (int16 for the sample), as Slicer keeps it
    node.ijk_to_ras = ijk_to_ras
    node.CreateDefaultDisplayNodes()
    return node


# --- slicer.util ------------------------------------------------------------------------------------------------------


class _StrictModule(types.ModuleType):
    def __getattr__(self, item):
        raise AttributeError(f"the stand-in {self.__name__} has no {item!r} (is it a real Slicer name?)")


def _launch_console_process(
    args,
    useStartupEnvironment=True,
    updateEnvironment=None,
    cwd=None,
    blocking=True,
    logCallback=None,
    completedCallback=None,
):
    """Slicer 5.12's behaviour: Popen with merged, text-mode output; a reader thread; callbacks from the event loop.
    The arguments of each call are kept in ``state["launches"]``."""
    _state.setdefault("launches", []).append(
        {"args": list(args), "useStartupEnvironment": useStartupEnvironment, "cwd": cwd, "blocking": blocking}
    )
    env = dict(os.environ)
    env.update(updateEnvironment or {})
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if blocking:
        return proc
    lines: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            lines.put(("line", line.rstrip()))
        proc.wait()
        lines.put(("done", proc.returncode))

    threading.Thread(target=read, daemon=True).start()

    def check():
        while True:
            try:
                kind, data = lines.get_nowait()
            except queue.Empty:
                break
            if kind == "line":
                logCallback(data)
            else:
                completedCallback(data)
                return
        single_shot(100, check)

    single_shot(0, check)
    return proc


def _update_volume_from_array(node, array):
    node.array = np.array(array, copy=True)


def _set_slice_viewer_layers(
    background="keep-current",
    foreground="keep-current",
    label="keep-current",
    foregroundOpacity=None,
    labelOpacity=None,
    fit=False,
    rotateToVolumePlane=False,
):
    _state["layers"] = {"background": background, "foreground": foreground, "foregroundOpacity": foregroundOpacity}


_state: dict = {}
_observers: list = []  # (object, event, method) of VTKObservationMixin.addObserver


def emit_app_signal(signal):
    """Play a signal of slicer.app (e.g. "aboutToQuit()") to the slots connected to it."""
    for connected, slot in list(_state["app_connections"]):
        if connected == signal:
            slot()


def install() -> types.ModuleType:
    """Put the stand-ins into ``sys.modules``; returns the fake ``slicer`` (with ``.state`` for inspections)."""
    _timers.clear()
    _state.clear()
    _observers.clear()
    scene = Scene()
    _state["scene"] = scene
    slicer = _LooseModule("slicer")
    slicer.__path__ = []
    slicer.state = _state
    slicer.mrmlScene = scene
    for name, cls in _NODE_CLASSES.items():
        setattr(slicer, name, cls)
    slicer.vtkMRMLNode = vtkMRMLNode
    slicer.vtkMRMLSubjectHierarchyNode = SubjectHierarchy

    connections = []  # (signal, slot) of slicer.app.connect; emit_app_signal plays one
    _state["app_connections"] = connections
    app = types.SimpleNamespace(
        processEvents=process_events,
        layoutManager=lambda: None,
        testingEnabled=lambda: True,
        connect=lambda signal, slot: connections.append((signal, slot)),
    )
    slicer.app = app

    legends = []  # the displayable nodes given a colour legend, in order; titles by node in state["legend_titles"]
    titles = {}

    def add_default_color_legend_display_node(node):
        """vtkSlicerColorLogic: the node's legend display node, made once (Modules/Loadable/Colors/Logic)."""
        legends.append(node)
        return types.SimpleNamespace(SetTitleText=lambda text: titles.__setitem__(node.GetID(), text))

    colors_logic = types.SimpleNamespace(AddDefaultColorLegendDisplayNode=add_default_color_legend_display_node)
    _state["legends"] = legends
    _state["legend_titles"] = titles
    slicer.modules = types.SimpleNamespace(
        colors=types.SimpleNamespace(logic=lambda: colors_logic),
        sequences=types.SimpleNamespace(setToolBarActiveBrowserNode=None, showSequenceBrowser=None),
    )

    slm = _LooseModule("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent or types.SimpleNamespace(isEntered=True)
            self.layout = types.SimpleNamespace(addWidget=lambda widget: None)

        def setup(self):
            pass

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

        def getParameterNode(self):
            return scene.GetFirstNodeByClass("vtkMRMLScriptedModuleNode") or scene.AddNewNodeByClass(
                "vtkMRMLScriptedModuleNode", "ControlCG"
            )

    class ScriptedLoadableModuleTest(unittest.TestCase):
        """Slicer's is a unittest.TestCase too (Base/Python/slicer/ScriptedLoadableModule.py)."""

        def delayDisplay(self, message, requestedDelay=None, msec=None):
            _state.setdefault("messages", []).append(message)

    for cls in (
        ScriptedLoadableModule,
        ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
    ):
        setattr(slm, cls.__name__, cls)

    pnw = _LooseModule("slicer.parameterNodeWrapper")

    def parameterNodeWrapper(cls):
        """Fields with their defaults on a plain object (Slicer's wrapper stores them in a MRML node instead)."""
        fields = {name: getattr(cls, name, None) for name in cls.__annotations__}

        def __init__(self, node=None):
            object.__setattr__(self, "node", node)
            for name, default in fields.items():
                object.__setattr__(self, name, default)

        def __setattr__(self, name, value):
            """A field's change is the parameter node's ModifiedEvent: observers run at once, as in Slicer."""
            object.__setattr__(self, name, value)
            if name in fields:
                for obj, _event, method in list(_observers):
                    if obj is self:
                        method(self, _event)

        cls.__init__ = __init__
        cls.__setattr__ = __setattr__
        cls.connectGui = lambda self, ui: "gui-tag"  # the .ui bindings themselves are test_slicer_ui.py's part
        cls.disconnectGui = lambda self, tag: None
        return cls

    pnw.parameterNodeWrapper = parameterNodeWrapper
    pnw.WithinRange = lambda lo, hi: ("WithinRange", lo, hi)
    pnw.Choice = lambda choices: ("Choice", tuple(choices))

    util = _StrictModule("slicer.util")

    class VTKObservationMixin:
        def __init__(self):
            pass

        def addObserver(self, obj, event, method, group="none", priority=0.0):
            _observers.append((obj, event, method))

        def removeObserver(self, obj, event, method):
            with contextlib.suppress(ValueError):
                _observers.remove((obj, event, method))

        def removeObservers(self, method=None):
            _observers[:] = [o for o in _observers if method is not None and o[2] != method]

    util.VTKObservationMixin = VTKObservationMixin
    util.loadUI = _load_ui
    util.childWidgetVariables = _child_widget_variables
    util.WaitCursor = _wait_cursor
    util.errorDisplay = _display("error")
    util.warningDisplay = _display("warning")
    util.addVolumeFromArray = _add_volume_from_array
    util.loadVolume = _load_volume
    util.arrayFromVolume = lambda node: node.array
    util.arrayFromVTKMatrix = lambda matrix: matrix.a.copy()
    util.updateVolumeFromArray = _update_volume_from_array
    util.launchConsoleProcess = _launch_console_process
    util.setSliceViewerLayers = _set_slice_viewer_layers

    i18n = _LooseModule("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text

    qt = _LooseModule("qt")
    qt.QTimer = types.SimpleNamespace(singleShot=single_shot)
    vtk = _LooseModule("vtk")
    vtk.vtkMatrix4x4 = vtkMatrix4x4
    vtk.vtkDoubleArray = vtkDoubleArray

    slicer.ScriptedLoadableModule = slm
    slicer.parameterNodeWrapper = pnw
    slicer.util = util
    slicer.i18n = i18n
    sys.modules.update(
        {
            "slicer": slicer,
            "slicer.ScriptedLoadableModule": slm,
            "slicer.parameterNodeWrapper": pnw,
            "slicer.util": util,
            "slicer.i18n": i18n,
            "qt": qt,
            "ctk": _LooseModule("ctk"),
            "vtk": vtk,
        }
    )
    return slicer
