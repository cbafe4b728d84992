"""Stand-ins for Slicer's ``slicer``, ``qt``, ``ctk`` and ``vtk`` modules, so that tests can import ControlCG.py.

Just enough for ``import ControlCG`` to run its module body: base classes to inherit from, decorators that return
the class, annotation markers, and auto-created attributes for everything else.
"""

from __future__ import annotations

import sys
import types


class _Anything:
    """An attribute sink: any attribute or call returns another sink (for qt.QIcon, slicer.app.connect, ...)."""

    def __init__(self, name="stub"):
        self._name = name

    def __getattr__(self, item):
        return _Anything(f"{self._name}.{item}")

    def __call__(self, *args, **kwargs):
        return _Anything(f"{self._name}()")

    def __or__(self, other):
        return self


class _Module(types.ModuleType):
    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        value = _Anything(f"{self.__name__}.{item}")
        setattr(self, item, value)
        return value


def _node_class(name):
    return type(name, (), {})


def install() -> None:
    slicer = _Module("slicer")
    slicer.__path__ = []  # a package, so that "import slicer.packaging" style imports resolve
    for name in ("vtkMRMLNode", "vtkMRMLScalarVolumeNode", "vtkMRMLSequenceNode"):
        setattr(slicer, name, _node_class(name))

    slm = _Module("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

        def getParameterNode(self):
            return None

    class ScriptedLoadableModuleTest:
        pass

    for cls in (
        ScriptedLoadableModule,
        ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
    ):
        setattr(slm, cls.__name__, cls)

    pnw = _Module("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.WithinRange = lambda lo, hi: ("WithinRange", lo, hi)
    pnw.Choice = lambda choices: ("Choice", tuple(choices))

    util = _Module("slicer.util")

    class VTKObservationMixin:
        def __init__(self):
            pass

    util.VTKObservationMixin = VTKObservationMixin

    i18n = _Module("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text

    slicer.ScriptedLoadableModule = slm
    slicer.parameterNodeWrapper = pnw
    slicer.util = util
    slicer.i18n = i18n
    modules = {
        "slicer": slicer,
        "slicer.ScriptedLoadableModule": slm,
        "slicer.parameterNodeWrapper": pnw,
        "slicer.util": util,
        "slicer.i18n": i18n,
        "qt": _Module("qt"),
        "ctk": _Module("ctk"),
        "vtk": _Module("vtk"),
    }
    sys.modules.update(modules)
