"""How much memory a run will take, known before it starts, so that a grid too big for the machine is refused with
the estimate instead of dying halfway (or taking the workstation down with it).

One UNet pass is *traced*, not computed: the model is built and run under PyTorch's FakeTensorMode (shapes and
devices only, no data, no allocation) while a dispatch mode keeps the sum of the storages alive after every operator;
its peak is what the real pass holds at its worst. Traced are the passes of one sampler step (reference pass
recording the attention tokens, conditional and unconditional pass injecting them, so the recorded tokens and the
conditional output are held while the unconditional pass runs), under the run's precision. Added to it: the weights
and the volumes the sampler keeps (input, start, noise, and x_t and x_0 per w). Memory free is read from the OS
(/proc/meminfo and the cgroup limit) or from CUDA.

The trace takes ~1.7 s on a 2-core CPU (most of it importing the tracing machinery), an eighth of a whole run, and
gives the same bytes every time for one model configuration and setting: the command line keeps it in a small JSON
file under the user's cache folder (:func:`cache_file`) keyed by everything it depends on, and traces only what it
has not seen. A cache that cannot be read or written is ignored (the trace runs).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..model.config import ModelConfig, to_dict
from .settings import InjectionConfig

GB = 1024**3
SAFETY = 0.9  # refuse when the estimate exceeds this share of the free memory (the OS and other programs need some)
KEPT_VOLUMES = 4  # input, start, reference noise, step noise; plus x_t and x_0 per w
#: What the runtime itself grows by during sampling beyond the tensors: on the CPU (oneDNN scratch pads and primitive
#: caches, thread pools, the allocator) a constant plus a share of the passes' peak. Measured over the tensors
#: (benchmarks/memory.py, 2-core x86 CPU): 70-250 MB on the embedded grid, 250-410 MB on the paper grid; resident
#: memory is noisy, so both terms carry margin. On CUDA not measured yet (no GPU was lent): the CUDA terms are a
#: guess for the context, cuDNN workspaces and fragmentation.
RUNTIME = {"cpu": (300 * 1024**2, 0.4), "cuda": (512 * 1024**2, 0.25)}  # CUDA: a guess until measured


class PeakTracker(TorchDispatchMode):
    """Bytes of tensor storage alive, after every operator, for tensors made inside the mode; ``peak`` the most."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                self.live.setdefault(ref.cdata, (ref, storage.nbytes()))
        now = 0
        for key, (ref, nbytes) in list(self.live.items()):
            if ref.expired():
                del self.live[key]
            else:
                now += nbytes
        self.peak = max(self.peak, now)
        return out


def step_passes(
    model, injection: InjectionConfig | None, precision: str, device: torch.device, kv_stride: int = 1
) -> int:
    """Peak bytes of one sampler step's UNet passes on ``model`` (real or fake), weights not counted: the very
    model function the sampler calls (guided_step.py), for one w != 0 with the reference pass."""
    from .guided_step import GuidedStep

    x = torch.zeros((1, 1, *model.config.grid), device=device)
    t = model.config.schedule.num_train_timesteps // 2
    step = GuidedStep(model, [0], injection, precision, kv_stride)
    with torch.no_grad(), step as guided, PeakTracker() as tracker:
        v = guided({(0, 1.0): x}, t, reference=x if injection is not None else None)
        del v
    return tracker.peak


@dataclass
class Estimate:
    weights: int
    passes: int
    volumes: int
    runtime: int = 0
    images: int = 0  # the scan and its results on the scan's own grid (see :func:`native_bytes`)

    @property
    def total(self) -> int:
        return self.weights + self.passes + self.volumes + self.runtime + self.images

    def describe(self) -> str:
        parts = f"weights {size(self.weights)}, UNet passes {size(self.passes)}, kept volumes {size(self.volumes)}"
        parts += f", runtime {size(self.runtime)}, images {size(self.images)}"
        return f"about {size(self.total)} ({parts})"


def size(nbytes: int) -> str:
    return f"{nbytes / GB:.2f} GB" if nbytes >= GB else f"{nbytes / 1024**2:.0f} MB"


def estimate(
    config: ModelConfig,
    n_scales: int,
    precision: str = "fp32",
    injection: InjectionConfig | None = None,
    device="cpu",
    kv_stride: int = 1,
    cache: Path | None = None,
) -> Estimate:
    """Memory a counterfactual run of ``n_scales`` w values will take on ``device``, traced without computing;
    ``cache`` (a JSON file): the traced bytes are read from it when known and added to it when not."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        device = torch.device("cpu")  # same operators; a CPU-only torch cannot make fake CUDA tensors
    key = _cache_key(config, precision, injection, device, kv_stride)
    known = _read_cache(cache).get(key) if cache is not None else None
    if isinstance(known, dict) and all(isinstance(known.get(k), int) for k in ("weights", "passes")):
        weights, passes = known["weights"], known["passes"]
    else:
        weights, passes = _trace(config, precision, injection, device, kv_stride)
        if cache is not None:
            _write_cache(cache, key, {"weights": weights, "passes": passes})
    volume = 4 * int(torch.Size(config.grid).numel())
    constant, share = RUNTIME.get(device.type, (0, 0.0))
    return Estimate(weights, passes, volume * (KEPT_VOLUMES + 2 * n_scales), constant + int(share * passes))


def _trace(config, precision, injection, device, kv_stride) -> tuple[int, int]:
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ..model.networks import ClassConditionalUNet

    with FakeTensorMode(), device:
        model = ClassConditionalUNet(config).eval()
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        passes = step_passes(model, injection, precision, device, kv_stride)
    return int(weights), int(passes)


def cache_file() -> Path:
    """``$CONTROLCG_CACHE_DIR``, else ``$XDG_CACHE_HOME/controlcg``, else ``~/.cache/controlcg``: memory.json."""
    folder = os.environ.get("CONTROLCG_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = str(Path(base) / "controlcg")
    return Path(folder) / "memory.json"


def _cache_key(config, precision, injection, device, kv_stride) -> str:
    described = {
        "config": to_dict(config),
        "precision": precision,
        "injection": None if injection is None else to_dict(injection),
        "device": device.type,
        "kv_stride": int(kv_stride),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read_cache(path: Path) -> dict:
    try:
        known = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _write_cache(path: Path, key: str, value: dict) -> None:
    try:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        known = _read_cache(path)
        known[key] = value
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(known, indent=1) + "\n")
        os.replace(partial, path)  # atomic: a concurrent run reads the old file or the new one, never half of one
    except OSError:
        pass


def native_bytes(voxels: int, n_scales: int) -> int:
    """The scan (float32) and, per w, its three results on the scan's grid, plus the mask and working copies."""
    return 4 * int(voxels) * (3 * n_scales + 4)


def available(device="cpu") -> int | None:
    """Bytes free for this process now: CUDA's free memory, or the OS's available memory (psutil where installed,
    else /proc/meminfo) within the cgroup's limit; None where the system does not say."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    known = [v for v in (_os_available(), _cgroup_room()) if v is not None]
    return min(known) if known else None


def _os_available() -> int | None:
    try:
        import psutil  # macOS and Windows (Slicer's usual homes) have no /proc

        return int(psutil.virtual_memory().available)
    except ImportError:
        return _meminfo_available()


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_room() -> int | None:
    """cgroup v2 limit minus usage (containers: the host's MemAvailable does not know the limit)."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        stat = dict(line.split() for line in Path("/sys/fs/cgroup/memory.stat").read_text().splitlines())
    except (OSError, ValueError):
        return None
    reclaimable = int(stat.get("inactive_file", 0))  # page cache the kernel gives back on demand
    return None if limit == "max" else max(0, int(limit) - used + reclaimable)


def check_fits(est: Estimate, device="cpu", free: int | None = None, resident: int = 0) -> int | None:
    """Refuse (ValueError, with the estimate) a run that would not fit in the free memory of ``device``; ``resident``
    bytes of the estimate (weights already loaded) are not counted again. Returns the free bytes it compared with,
    None where the system does not say (then nothing is checked)."""
    free = available(device) if free is None else free
    if free is None:
        return None
    if est.total - resident > SAFETY * free:
        elsewhere = ", or run it on a machine with more memory" + (" (--device cuda)" if str(device) == "cpu" else "")
        raise ValueError(
            f"this run would need {est.describe()}, but only {size(free)} are free on {device}; compute fewer w "
            f"values per run, use a model with a smaller grid, close other programs{elsewhere}"
        )
    return free
