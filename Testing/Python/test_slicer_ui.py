"""The Slicer module panel, Resources/UI/ControlCG.ui, loaded with Qt's own QUiLoader (offscreen, PySide6) and the
stand-in CTK / qMRML widgets of qt_standins.py, and checked against ControlCG/ControlCG.py, read with `ast` (it
imports slicer, so it is never imported here): every `self.ui.<name>` it uses exists, and every widget bound to the
parameter node names a field that Slicer's parameterNodeWrapper can connect to that widget."""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("PySide6", reason="PySide6 is needed to load the .ui (pip install PySide6-Essentials)")
pytest.importorskip("PySide6.QtUiTools", reason="this PySide6 has no QtUiTools")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from PySide6.QtWidgets import QWidget  # noqa: E402
from qt_standins import STANDINS, load_ui  # noqa: E402

from ControlCGLib.defaults import STEPS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "Resources" / "UI" / "ControlCG.ui"
MODULE = ROOT / "ControlCG" / "ControlCG.py"

#: objectName -> (class, SlicerParameterName or None)
WIDGETS = {
    "ControlCG": ("qMRMLWidget", None),
    "inputsCollapsibleButton": ("ctkCollapsibleButton", None),
    "inputSelector": ("qMRMLNodeComboBox", "inputVolume"),
    "targetClassComboBox": ("QComboBox", None),
    # bound by hand in ControlCG.py: its entries come from the model's class names
    "sourceComboBox": ("QComboBox", None),
    "wSliderWidget": ("ctkSliderWidget", "w"),
    "sweepLabel": ("QLabel", None),
    "inputVerdictLabel": ("QLabel", None),
    "counterfactualVerdictLabel": ("QLabel", None),
    "rawVerdictLabel": ("QLabel", None),
    "pairingLabel": ("QLabel", None),
    "classifierNoteLabel": ("QLabel", None),
    "otherDirectionButton": ("QPushButton", None),
    "volumesCollapsibleButton": ("ctkCollapsibleButton", None),
    "volumesLabel": ("QLabel", None),
    "volumesTableView": ("qMRMLTableView", None),
    "displayCollapsibleButton": ("ctkCollapsibleButton", None),
    "overlayComboBox": ("QComboBox", "overlay"),
    "overlayOpacitySliderWidget": ("ctkSliderWidget", "overlayOpacity"),
    "saliencyThresholdSliderWidget": ("ctkSliderWidget", "saliencyThreshold"),
    "backgroundComboBox": ("QComboBox", "background"),
    "advancedCollapsibleButton": ("ctkCollapsibleButton", None),
    "stepsSpinBox": ("QSpinBox", "steps"),
    "startStrengthSliderWidget": ("ctkSliderWidget", "startStrength"),
    "seedSpinBox": ("QSpinBox", "seed"),
    "sweepLineEdit": ("QLineEdit", "sweep"),
    "deviceComboBox": ("QComboBox", "device"),
    # bound by hand in ControlCG.py (a str): Slicer's Path connector cannot express "empty = the embedded model"
    "modelPathLineEdit": ("ctkPathLineEdit", None),
    "preprocessedCheckBox": ("QCheckBox", "preprocessed"),
    "acceptUnusualScanCheckBox": ("QCheckBox", "acceptUnusualScan"),
    "applyButton": ("QPushButton", None),
    "cancelButton": ("QPushButton", None),
    "progressBar": ("QProgressBar", None),
    "statusLabel": ("QLabel", None),
}

#: objectName -> (minimum, maximum, singleStep, pageStep, decimals, value) of the ctkSliderWidgets
SLIDERS = {
    "wSliderWidget": (0.0, 10.0, 0.5, 1.0, 1, 4.0),
    "overlayOpacitySliderWidget": (0.0, 1.0, 0.05, 0.1, 2, 0.6),
    "saliencyThresholdSliderWidget": (0.0, 0.5, 0.01, 0.05, 2, 0.2),
    "startStrengthSliderWidget": (0.05, 1.0, 0.05, 0.1, 2, 0.3),
}
# (minimum, maximum, value)
SPIN_BOXES = {"stepsSpinBox": (1, 1000, int(STEPS.default)), "seedSpinBox": (0, 2147483647, 0)}


@pytest.fixture(scope="module")
def panel() -> QWidget:
    return load_ui(UI)


def widget(panel: QWidget, name: str) -> QWidget:
    found = panel if panel.objectName() == name else panel.findChild(QWidget, name)
    assert found is not None, f"{UI.name} has no widget named {name!r}"
    return found


def ui_tree() -> ET.Element:
    return ET.parse(UI).getroot()


def bound_widgets() -> dict[str, tuple[str, str]]:
    """objectName -> (class, SlicerParameterName) for every widget of the .ui bound to the parameter node."""
    bound = {}
    for element in ui_tree().iter("widget"):
        for prop in element.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[element.get("name")] = (element.get("class"), prop.findtext("string"))
    return bound


def module_tree(path: Path = MODULE) -> ast.Module:
    if not path.is_file():
        pytest.skip(f"{path.relative_to(ROOT)} is not written yet")
    return ast.parse(path.read_text(), filename=str(path))


def used_ui_names(tree: ast.Module) -> set[str]:
    """Every <name> of `self.ui.<name>` in the module."""
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }


def parameter_fields(tree: ast.Module) -> dict[str, ast.expr]:
    """Annotated class attributes (name -> annotation) of the class decorated with @parameterNodeWrapper."""

    def is_wrapper(decorator: ast.expr) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        return name == "parameterNodeWrapper"

    classes = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and any(is_wrapper(d) for d in node.decorator_list)
    ]
    assert len(classes) == 1, f"expected one @parameterNodeWrapper class in {MODULE.name}, found {len(classes)}"
    return {
        item.target.id: item.annotation
        for item in classes[0].body
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }


# (a) loading


def test_ui_loads_with_qt_uiloader(panel):
    assert type(panel).__name__ == "qMRMLWidget"
    assert panel.objectName() == "ControlCG"
    assert ui_tree().findtext("class") == "ControlCG"


def test_every_custom_widget_has_a_standin():
    declared = {c.findtext("class"): c for c in ui_tree().iter("customwidget")}
    assert set(declared) == {cls.__name__ for cls in STANDINS}
    for name, element in declared.items():
        assert element.findtext("header") == f"{name}.h"
        # what each class derives from in CTK / Slicer (qMRMLTableView.h: a QTableView, declared so in Slicer's own
        # Modules/Loadable/Tables/Resources/UI/qSlicerTablesModuleWidget.ui)
        assert element.findtext("extends") == ("QTableView" if name == "qMRMLTableView" else "QWidget")
    assert {n for n, e in declared.items() if e.findtext("container") == "1"} == {"ctkCollapsibleButton", "qMRMLWidget"}


def test_scene_reaches_the_node_selector(panel):
    """The .ui's mrmlSceneChanged(vtkMRMLScene*) -> setMRMLScene(vtkMRMLScene*) connection, as in Slicer's template."""
    connections = [{child.tag: child.text for child in c if child.tag != "hints"} for c in ui_tree().iter("connection")]
    for receiver in ("inputSelector", "volumesTableView"):
        assert {
            "sender": "ControlCG",
            "signal": "mrmlSceneChanged(vtkMRMLScene*)",
            "receiver": receiver,
            "slot": "setMRMLScene(vtkMRMLScene*)",
        } in connections
    scene = object()
    panel.setMRMLScene(scene)
    assert widget(panel, "inputSelector").mrmlScene() is scene
    assert widget(panel, "volumesTableView").mrmlScene() is scene


# (b) widgets, classes, bindings


@pytest.mark.parametrize("name", list(WIDGETS))
def test_widget_exists_with_class(panel, name):
    found = widget(panel, name)
    expected = WIDGETS[name][0]
    assert expected in (type(found).__name__, found.metaObject().className())


def test_parameter_bindings_are_exactly_the_expected_ones(panel):
    expected = {name: (cls, param) for name, (cls, param) in WIDGETS.items() if param is not None}
    assert bound_widgets() == expected
    for name, (_, param) in expected.items():
        assert widget(panel, name).property("SlicerParameterName") == param


def test_object_names_are_unique():
    names = [e.get("name") for e in ui_tree().iter() if e.tag in ("widget", "layout", "spacer")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_form_labels_and_texts(panel):
    texts = {
        "inputsCollapsibleButton": "Counterfactual",
        "displayCollapsibleButton": "Display",
        "advancedCollapsibleButton": "Advanced",
        "applyButton": "Apply",
        "cancelButton": "Cancel",
        "sweepLabel": "none yet",
        "inputVerdictLabel": "-",
        "counterfactualVerdictLabel": "-",
        "rawVerdictLabel": "-",
        "pairingLabel": "-",
        "classifierNoteLabel": "-",
        "volumesLabel": "none yet",
        "volumesCollapsibleButton": "Regional volumes",
        "statusLabel": "",
        "sweepLineEdit": "0 2 4 6 8 10",
    }
    for name, text in texts.items():
        assert widget(panel, name).property("text") == text, name
    labels = {}
    for form in ui_tree().iter("layout"):
        if form.get("class") != "QFormLayout":
            continue
        rows: dict[str, dict[str, ET.Element]] = {}
        for item in form.findall("item"):
            rows.setdefault(item.get("row"), {})[item.get("column")] = item.find("widget")
        for row in rows.values():
            if "0" in row and "1" in row:
                labels[row["1"].get("name")] = row["0"].findtext("property[@name='text']/string")
    assert labels == {
        "inputSelector": "Input T1 volume:",
        "targetClassComboBox": "Hypothetical class:",
        "sourceComboBox": "Change from:",
        "wSliderWidget": "Guidance w:",
        "sweepLabel": "Precomputed w:",
        "inputVerdictLabel": "Classifier on input:",
        "counterfactualVerdictLabel": "Classifier on counterfactual:",
        "rawVerdictLabel": "Classifier on raw output:",
        "pairingLabel": "Saliency:",
        "classifierNoteLabel": "Verdicts:",
        "overlayComboBox": "Overlay:",
        "overlayOpacitySliderWidget": "Overlay opacity:",
        "saliencyThresholdSliderWidget": "Overlay threshold:",
        "backgroundComboBox": "Under the overlay:",
        "stepsSpinBox": "DDIM steps:",
        "startStrengthSliderWidget": "Start strength:",
        "seedSpinBox": "Seed:",
        "sweepLineEdit": "w sweep:",
        "deviceComboBox": "Device:",
        "modelPathLineEdit": "Model folder:",
    }


def test_initial_states(panel):
    selector = widget(panel, "inputSelector")
    assert selector.nodeTypes == ["vtkMRMLScalarVolumeNode"]
    assert (selector.noneEnabled, selector.addEnabled, selector.removeEnabled, selector.showChildNodeTypes) == (
        True,
        False,
        False,
        False,
    )
    assert widget(panel, "advancedCollapsibleButton").collapsed is True
    assert widget(panel, "inputsCollapsibleButton").collapsed is False
    assert widget(panel, "displayCollapsibleButton").collapsed is False
    assert not widget(panel, "applyButton").isEnabled()
    assert not widget(panel, "cancelButton").isEnabled()
    assert widget(panel, "progressBar").value() == 0
    assert widget(panel, "progressBar").isTextVisible()
    assert widget(panel, "statusLabel").wordWrap()
    assert widget(panel, "pairingLabel").wordWrap()
    assert widget(panel, "classifierNoteLabel").wordWrap() and widget(panel, "volumesLabel").wordWrap()
    assert widget(panel, "volumesCollapsibleButton").collapsed is False
    table = widget(panel, "volumesTableView")
    assert table.editTriggers() == table.EditTrigger.NoEditTriggers  # the numbers are read, not edited
    for name in (
        "targetClassComboBox",
        "sourceComboBox",
        "wSliderWidget",
        "sweepLineEdit",
        "modelPathLineEdit",
        "stepsSpinBox",
        "overlayComboBox",
        "otherDirectionButton",
    ):
        assert widget(panel, name).toolTip(), f"{name} has no tool tip"
    assert "embedded model" in widget(panel, "modelPathLineEdit").toolTip()
    assert "raw output" in widget(panel, "backgroundComboBox").toolTip()
    assert "Default: the class the classifier gives the scan" in widget(panel, "sourceComboBox").toolTip()
    overlay = widget(panel, "overlayComboBox").toolTip()
    assert "shrinks" in overlay and "grows" in overlay


# (e) ranges and defaults


@pytest.mark.parametrize("name", list(SLIDERS))
def test_slider_range_and_default(panel, name):
    slider = widget(panel, name)
    minimum, maximum, single_step, page_step, decimals, value = SLIDERS[name]
    assert slider.minimum == pytest.approx(minimum)
    assert slider.maximum == pytest.approx(maximum)
    assert slider.singleStep == pytest.approx(single_step)
    assert slider.pageStep == pytest.approx(page_step)
    assert slider.decimals == decimals
    assert slider.value == pytest.approx(value)


@pytest.mark.parametrize("name", list(SPIN_BOXES))
def test_spin_box_range_and_default(panel, name):
    box = widget(panel, name)
    assert (box.minimum(), box.maximum(), box.value()) == SPIN_BOXES[name]


def test_sweep_default_contains_the_slider_default(panel):
    sweep = [float(v) for v in widget(panel, "sweepLineEdit").text().split()]
    assert widget(panel, "wSliderWidget").value in sweep
    slider = widget(panel, "wSliderWidget")
    assert all(slider.minimum <= w <= slider.maximum for w in sweep)


# (c), (d): the module's code against the .ui


def test_every_ui_attribute_the_module_uses_exists(panel):
    used = used_ui_names(module_tree())
    assert used, f"{MODULE.name} uses no self.ui.<name>"
    missing = sorted(name for name in used if panel.findChild(QWidget, name) is None)
    assert not missing, f"{MODULE.name} uses self.ui.{missing} which {UI.name} does not have"


def test_every_parameter_name_is_a_parameter_node_field():
    fields = parameter_fields(module_tree())
    unknown = sorted(param for _, param in bound_widgets().values() if param not in fields)
    assert not unknown, f"{UI.name} binds {unknown}, which the parameter node class does not declare: {sorted(fields)}"


def _defaults_range(node: ast.expr) -> tuple[float, float] | None:
    """The range a ``*defaults.NAME.range`` (or ``*map(int, defaults.NAME.range)``) argument names, read from
    ControlCGLib/defaults.py (the panel's one source of ranges)."""
    from ControlCGLib import defaults

    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Attribute)
            and sub.attr == "range"
            and isinstance(sub.value, ast.Attribute)
            and isinstance(sub.value.value, ast.Name)
            and sub.value.value.id == "defaults"
        ):
            return getattr(defaults, sub.value.attr).range
    return None


def _bounds(annotation: ast.expr) -> tuple[float | None, float | None]:
    """The (minimum, maximum) of WithinRange / Minimum / Maximum in an annotation -- literals, or a range of
    ControlCGLib/defaults.py -- None where absent."""
    low = high = None
    for node in ast.walk(annotation):
        if not isinstance(node, ast.Call):
            continue
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if func == "WithinRange" and len(node.args) == 1 and isinstance(node.args[0], ast.Starred):
            named = _defaults_range(node.args[0])
            if named is not None:
                low, high = named
                continue
        try:
            args = [ast.literal_eval(a) for a in node.args]
        except ValueError:
            continue
        if func == "WithinRange" and len(args) == 2:
            low, high = args
        elif func == "Minimum" and len(args) == 1:
            low = args[0]
        elif func == "Maximum" and len(args) == 1:
            high = args[0]
    return low, high


def _base_type(annotation: ast.expr) -> str:
    """`float` of `float`, `Annotated[float, ...]` or `typing.Annotated[float, ...]`; the unparsed text otherwise."""
    if isinstance(annotation, ast.Subscript):
        outer = ast.unparse(annotation.value)
        if outer.split(".")[-1] == "Annotated":
            inner = annotation.slice
            return _base_type(inner.elts[0] if isinstance(inner, ast.Tuple) else inner)
    return ast.unparse(annotation)


# The datatypes Slicer's parameterNodeWrapper connects to each widget class (slicer/parameterNodeWrapper/
# guiConnectors.py): any other pairing fails when the module's widget calls connectGui.
CONNECTABLE = {
    "ctkSliderWidget": {"float", "int"},
    "QSpinBox": {"int"},
    "QCheckBox": {"bool"},
    "QLineEdit": {"str"},
    "QComboBox": {"str", "int", "float", "bool"},  # with a Choice annotation (or an Enum, not used here)
    "ctkPathLineEdit": {"Path", "pathlib.Path"},
}


def test_parameter_types_suit_their_widgets():
    fields = parameter_fields(module_tree())
    ui = {e.get("name"): e for e in ui_tree().iter("widget")}
    for name, (cls, param) in bound_widgets().items():
        annotation = fields.get(param)
        if annotation is None:
            continue  # reported by test_every_parameter_name_is_a_parameter_node_field
        base, text = _base_type(annotation), ast.unparse(annotation)
        if cls == "qMRMLNodeComboBox":
            assert "vtkMRMLScalarVolumeNode" in text, f"{param}: {text}"
            continue
        assert base in CONNECTABLE[cls], f"{param} is {text}; Slicer connects {cls} only to {CONNECTABLE[cls]}"
        low, high = _bounds(annotation)
        if cls == "QComboBox":
            assert "Choice(" in text, f"{param}: Slicer needs a Choice annotation to fill {name}"
        if cls == "ctkSliderWidget":
            assert low is not None and high is not None, f"{param}: Slicer refuses an unbounded ctkSliderWidget"
        if cls in ("ctkSliderWidget", "QSpinBox"):
            # Slicer sets the widget's range from the annotation, replacing the .ui's.
            element = ui[name]
            for bound, prop in ((low, "minimum"), (high, "maximum")):
                if bound is None:
                    continue
                value = element.find(f"property[@name='{prop}']/*")
                assert value is not None and float(value.text) == pytest.approx(bound), (
                    f"{param}: annotation {prop} {bound} != the .ui's {None if value is None else value.text}"
                )


# The checks above on a module written here, so that they are known to work while ControlCG.py does not exist yet.
EXAMPLE_MODULE = """
import pathlib
from typing import Annotated
import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper


@parameterNodeWrapper
class ControlCGParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    w: Annotated[float, WithinRange(0, 10)] = 4.0
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    saliencyThreshold: Annotated[float, WithinRange(0.0, 0.5)] = 0.05
    background: Annotated[str, Choice(["counterfactual", "raw model output", "input scan"])] = "counterfactual"
    overlay: Annotated[str, Choice(["saliency", "volume change"])] = "saliency"
    steps: Annotated[int, WithinRange(1, 1000)] = 50
    startStrength: Annotated[float, WithinRange(0.05, 1.0)] = 0.3
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    sweep: str = "0 2 4 6 8 10"
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    modelPath: str = ""  # bound by hand: no widget names it
    preprocessed: bool = False
    acceptUnusualScan: bool = False


class ControlCGWidget:
    def setup(self):
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.targetClassComboBox.currentIndexChanged.connect(self.onTarget)
        other.ui.notAWidget = 1
"""


def test_checks_on_an_example_module(monkeypatch, panel):
    tree = ast.parse(EXAMPLE_MODULE)
    assert used_ui_names(tree) == {"applyButton", "targetClassComboBox"}
    fields = parameter_fields(tree)
    assert {param for _, param in bound_widgets().values()} == set(fields) - {"modelPath"}
    assert _base_type(fields["w"]) == "float" and _bounds(fields["w"]) == (0, 10)
    assert _base_type(fields["background"]) == "str" and _bounds(fields["seed"]) == (0, 2147483647)
    monkeypatch.setattr(sys.modules[__name__], "module_tree", lambda: tree)
    test_every_ui_attribute_the_module_uses_exists(panel)
    test_every_parameter_name_is_a_parameter_node_field()
    test_parameter_types_suit_their_widgets()
    unbounded = ast.parse(EXAMPLE_MODULE.replace("Annotated[float, WithinRange(0, 10)]", "float"))
    monkeypatch.setattr(sys.modules[__name__], "module_tree", lambda: unbounded)
    with pytest.raises(AssertionError, match="unbounded ctkSliderWidget"):
        test_parameter_types_suit_their_widgets()
    shifted = ast.parse(EXAMPLE_MODULE.replace("WithinRange(1, 1000)", "WithinRange(0, 1000)"))
    monkeypatch.setattr(sys.modules[__name__], "module_tree", lambda: shifted)
    with pytest.raises(AssertionError, match="annotation minimum 0"):
        test_parameter_types_suit_their_widgets()
