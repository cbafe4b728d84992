"""The workflow that runs the module's self-test inside a real 3D Slicer (.github/workflows/slicer-selftest.yml),
checked without running it (it needs Slicer's download and extension servers and PyPI): it parses as YAML, it names
the recipe it follows, its steps come in the order the recipe needs (virtual display, cached tarball, extension, torch,
requirements, self-test, artifacts), the self-test's exit code is Slicer's own, and the Python each Slicer launch is
given compiles and uses only slicer.util names that exist in Slicer v5.12.3."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML parses the workflow (pip install PyYAML; it is in the test extra)")

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "slicer-selftest.yml"
SLICER_API = ROOT / "Testing" / "Data" / "slicer-api-v5.12.3.txt"
TARBALL = "$HOME/slicer-tarball/Slicer-${SLICER_VERSION}-linux-amd64.tar.gz"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def job(workflow) -> dict:
    (job,) = workflow["jobs"].values()
    return job


def _step(job: dict, words: str) -> tuple[int, dict]:
    found = [(i, s) for i, s in enumerate(job["steps"]) if words in s.get("name", "")]
    assert len(found) == 1, f"no single step named with {words!r}: {[s.get('name') for s in job['steps']]}"
    return found[0]


def _words(script: str) -> list[str]:
    return shlex.split(script.replace("\\\n", " "), comments=True)


def _python_codes(script: str) -> list[str]:
    """The --python-code arguments of every Slicer launch in a step's script (line continuations joined)."""
    words = _words(script)
    return [words[i + 1] for i, w in enumerate(words) if w == "--python-code"]


def _parse(code: str) -> ast.Module:
    return ast.parse(code.replace("$PWD", "/checkout"), "<--python-code>")


def _calls(tree: ast.AST) -> set[str]:
    """Dotted names of every call in the tree (``a.b.c(...)`` -> ``a.b.c``; ``x().y(...)`` -> ``x().y``)."""

    def dotted(node: ast.AST) -> str:
        if isinstance(node, ast.Attribute):
            return f"{dotted(node.value)}.{node.attr}"
        if isinstance(node, ast.Call):
            return f"{dotted(node.func)}()"
        return node.id if isinstance(node, ast.Name) else "?"

    return {dotted(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}


def _launches_slicer(step: dict) -> bool:
    return '"$SLICER_DIR/Slicer"' in step.get("run", "")


def test_workflow_parses_and_runs_when_a_hosting_service_would(workflow, job):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    assert job["runs-on"] == "ubuntu-24.04" and job["timeout-minutes"] <= 120
    assert job["defaults"]["run"]["shell"] == "bash"  # -eo pipefail
    assert job["env"]["SLICER_VERSION"] == "5.12.3"
    assert job["steps"][0]["uses"].startswith("actions/checkout@")


def test_header_names_the_recipe_it_follows_and_says_it_never_ran():
    text = WORKFLOW.read_text()
    header = text[: text.index("\nname:")]
    assert "NOT RUN YET" in header
    assert "dalcalab/SlicerMultiverSeg, .github/workflows/windows-testing.yml" in header
    for source in (
        ".github/actions/install-slicer/action.yml",
        ".github/python_scripts/install_pytorch_module.py",
        ".github/actions/slicer-install-extensions/install_extensions.py",
        "Slicer/slicer_download",
        "CMake/SlicerMacroPythonTesting.cmake",
        "Modules/Scripted/WebServer/WebServerLib/",
    ):
        assert source in header, source


def test_a_virtual_display_with_the_libraries_slicer_needs_comes_first(job):
    at, step = _step(job, "virtual X server")
    script = step["run"]
    # the Ubuntu 24.04 list of Slicer's installation guide, plus the recipe's libxcb-util1 and xvfb
    for package in ("libglu1-mesa", "libpulse-mainloop-glib0", "libnss3", "libasound2t64", "qt5dxcb-plugin"):
        assert re.search(rf"\s{re.escape(package)}\s", script), package
    assert re.search(r"\sxvfb\s", script) and re.search(r"\slibxcb-util1\s", script)
    assert "Xvfb :99 -screen 0 1920x1080x24" in script and "&\n" in script  # 24-bit: VTK's OpenGL needs it
    assert 'echo "DISPLAY=:99" >> "$GITHUB_ENV"' in script
    assert "xdpyinfo -display :99" in script  # waits for the server before any Slicer launch
    assert at == 1


def test_the_tarball_is_cached_on_the_version_and_downloaded_only_on_a_miss(job):
    cache_at, cache = _step(job, "from the cache")
    assert cache["uses"].startswith("actions/cache@")
    assert "${{ env.SLICER_VERSION }}" in cache["with"]["key"]
    assert cache["with"]["path"] == "~/slicer-tarball"

    download_at, download = _step(job, "Download 3D Slicer")
    assert download["if"] == f"steps.{cache['id']}.outputs.cache-hit != 'true'"
    url = "https://download.slicer.org/download?os=linux&stability=release&version=${SLICER_VERSION}"
    assert url in download["run"] and '-o "$tarball"' in download["run"] and f'tarball="{TARBALL}"' in download["run"]
    assert "https://download.slicer.org/find?os=linux&stability=release&version=${SLICER_VERSION}" in download["run"]
    assert "sha512sum -c -" in download["run"]

    unpack_at, unpack = _step(job, "Unpack 3D Slicer")
    assert f'tar -xzf "{TARBALL}" -C slicer --strip-components=1' in unpack["run"]
    assert "--version" in unpack["run"] and 'grep -q "${SLICER_VERSION}"' in unpack["run"]
    assert cache_at < download_at < unpack_at


def test_steps_follow_the_recipe_in_order(job):
    display_at, _ = _step(job, "virtual X server")
    unpack_at, _ = _step(job, "Unpack 3D Slicer")

    extension_at, extension = _step(job, "PyTorch extension")
    (code,) = _python_codes(extension["run"])
    assert "em.setInteractive(False)" in code and "installExtensionFromServer('PyTorch', False)" in code
    # --testing implies --disable-settings: the torch launch would not find the extension
    assert "--testing" not in _words(extension["run"])

    torch_at, torch = _step(job, "Install torch")
    (code,) = _python_codes(torch["run"])
    assert "PyTorchUtils.PyTorchUtilsLogic().installTorch(" in code and "askConfirmation=False" in code
    assert "forceComputationBackend='cpu'" in code and "if torch is None" in code
    assert "--testing" not in _words(torch["run"])

    requirements_at, requirements = _step(job, "requirements.txt")
    assert '"$SLICER_DIR/bin/PythonSlicer" -m pip install -r Resources/requirements.txt' in requirements["run"]

    test_at, _ = _step(job, "self-test in Slicer")
    upload_at, _ = _step(job, "Keep the logs")

    # display before any launch, Slicer, the extension, torch before the requirements (pip must find torch there),
    # the self-test, and the artifacts last
    assert display_at < unpack_at < extension_at < torch_at < requirements_at < test_at < upload_at
    assert upload_at == len(job["steps"]) - 1


def test_install_launches_fail_instead_of_staying_open(job):
    """Without --testing Slicer stays open after an exception: each install launch exits itself, 1 on any error."""
    for step in job["steps"]:
        if not _launches_slicer(step) or "--testing" in _words(step["run"]):
            continue
        (code,) = _python_codes(step["run"])
        (handler,) = [n for n in _parse(code).body if isinstance(n, ast.Try)]
        assert "slicer.util.exit" in _calls(ast.Module(body=handler.body, type_ignores=[]))
        (except_,) = handler.handlers
        assert "slicer.util.exit" in _calls(except_) and "traceback.print_exc" in _calls(except_)
        assert "EXIT_FAILURE" in ast.unparse(except_)
        assert step["timeout-minutes"] <= 30


def test_self_test_exit_code_is_slicers_and_a_screenshot_is_taken_whatever_the_result(job):
    _, test = _step(job, "self-test in Slicer")
    script = test["run"]
    assert script.startswith("set -o pipefail\n") and "| tee slicer-selftest.log" in script
    words = _words(script)
    launch = words.index("$SLICER_DIR/Slicer")
    assert "--testing" in words and "--no-splash" in words and "--no-main-window" not in words  # the window is shot
    assert words[words.index("--additional-module-paths") + 1] == "$PWD/ControlCG"
    assert words[launch - 1] != "xvfb-run" and "DISPLAY" not in test.get("env", {})  # the job's Xvfb :99

    (code,) = _python_codes(script)
    tree = _parse(code)
    (outer,) = [n for n in tree.body if isinstance(n, ast.Try)]
    # ctest's own command (slicer_add_python_unittest): runUnitTest raises when a test fails, --testing exits 1
    assert ast.unparse(outer.body) == "slicer.testing.runUnitTest(['/checkout/ControlCG'], 'ControlCG')"
    assert not outer.handlers, "the self-test's exception must reach Slicer, which then exits with a failure"
    shot = ast.Module(body=outer.finalbody, type_ignores=[])
    assert "slicer.util.mainWindow().grab().save" in _calls(shot)
    assert "/checkout/slicer-screenshots/" in ast.unparse(shot)
    assert "mkdir -p slicer-screenshots" in script


def test_no_step_swallows_a_failure(workflow, job):
    text = WORKFLOW.read_text()
    assert "|| true" not in text and "continue-on-error" not in text and "set +e" not in text
    for step in job["steps"]:
        run = step.get("run", "")
        if "| tee" in run:
            assert run.startswith("set -o pipefail\n") or "\nset -o pipefail\n" in run, step["name"]
            assert run.index("set -o pipefail") < run.index("| tee"), step["name"]


def test_logs_and_screenshots_are_uploaded_whatever_the_result(job):
    _, upload = _step(job, "Keep the logs")
    assert upload["if"] == "always()" and upload["uses"].startswith("actions/upload-artifact@")
    paths = upload["with"]["path"].split()
    assert "slicer-*.log" in paths and "slicer-screenshots/" in paths
    logs = {m for step in job["steps"] for m in re.findall(r"\| tee (slicer-[\w-]+\.log)", step.get("run", ""))}
    assert {"slicer-version.log", "slicer-selftest.log", "slicer-install-torch.log"} <= logs


def test_every_python_code_given_to_slicer_compiles_and_uses_existing_slicer_util_names(job):
    api = {line for line in SLICER_API.read_text().splitlines() if line and not line.startswith("#")}
    codes = [code for step in job["steps"] for code in _python_codes(step.get("run", ""))]
    assert len(codes) == 3
    for code in codes:
        tree = _parse(code)
        compile(tree, "<--python-code>", "exec")
        used = {
            ".".join(name.split(".")[:3]).removesuffix("()")
            for name in _calls(tree) | {ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
            if name.startswith("slicer.util.")
        }
        assert used and used <= api, used - api


def test_workflow_targets_what_the_repository_holds_and_stays_out_of_the_local_ci():
    requirements = (ROOT / "Resources" / "requirements.txt").read_text()
    requirement_names = [re.split(r"[<>=!~\[ ;]", line.strip())[0].lower() for line in requirements.splitlines()]
    requirement_names = [name for name in requirement_names if name and not name.startswith(("#", "-"))]
    assert requirement_names and "torch" not in requirement_names  # torch comes from the PyTorch extension only
    module = (ROOT / "ControlCG" / "ControlCG.py").read_text()
    assert re.search(r"^class ControlCGTest\(ScriptedLoadableModuleTest\):", module, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".github" not in ci and "xvfb" not in ci.lower()
