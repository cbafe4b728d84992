"""``controlcg presets``, ``template`` and ``simulate``: configurations and the data the models learn from."""

from __future__ import annotations

import json

from .common import add_command, add_overwrite, output_folder


def _cmd_presets(args) -> int:
    from ..model.config import PRESETS, preset, to_dict

    names = [args.name] if args.name else sorted(PRESETS)
    out = {n: to_dict(preset(n)) for n in names}
    print(json.dumps(out if len(names) > 1 else out[names[0]], indent=2))
    return 0


def _cmd_template(args) -> int:
    from ..imaging.template import derive_template

    written = derive_template(args.source, args.out, spacing=args.spacing)
    for name, path in written.items():
        print(f"{name:5s} {path}")
    return 0


def _cmd_simulate(args) -> int:
    """Write a simulated cohort with true counterfactuals and change maps, and report the ventricle effect size."""
    import dataclasses

    from tqdm.auto import tqdm

    from ..data.anatomies import anatomy_names
    from ..data.simulator import COHORT_V1, COHORT_V2, SimulationConfig, volume_summary, write_cohort

    config = {"v1": COHORT_V1, "v2": COHORT_V2, "v3": SimulationConfig()}[args.cohort]
    if args.anatomies:
        unknown = [a for a in args.anatomies if a not in anatomy_names()]
        if unknown:
            raise ValueError(f"unknown anatomy {unknown[0]!r}; the anatomies are {', '.join(anatomy_names())}")
        if args.cohort == "v1" and args.anatomies != ["icbm2009a"]:
            raise ValueError("cohort v1 has one anatomy, icbm2009a; use --cohort v3 or v2 for the others")
        config = dataclasses.replace(config, anatomies=tuple(args.anatomies))
    out = output_folder(args.out, args.overwrite)
    grid = None if args.template_grid else tuple(args.grid)
    with tqdm(total=args.n, desc="simulating subjects", unit="subject", mininterval=1.0) as bar:
        manifest = write_cohort(
            out, args.n, grid, seed=args.seed, config=config, on_subject=lambda i, rec: bar.update(1)
        )
    for line in volume_summary(manifest):
        print(line)
    print(f"wrote {manifest}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "presets", "print the model configuration presets as JSON", _cmd_presets)
    p.add_argument("name", nargs="?", help="one preset (default: all)")

    p = add_command(sub, "template", "derive the committed MNI template maps from nilearn's 1 mm files", _cmd_template)
    p.add_argument("--from", dest="source", required=True, help="nilearn/datasets/data folder of nilearn 0.14.1")
    p.add_argument("--out", default=None, help="output folder (default: Resources/Template)")
    p.add_argument("--spacing", type=float, default=2.0, help="output voxel size in mm")

    p = add_command(
        sub, "simulate", "write a simulated AD/CN cohort with true counterfactuals and change maps", _cmd_simulate
    )
    p.add_argument("--out", required=True, help="output folder (NIfTI files and manifest.csv)")
    p.add_argument("--n", type=int, default=20, help="number of subjects")
    p.add_argument("--grid", type=int, nargs=3, default=[80, 96, 80], metavar=("Z", "Y", "X"), help="model grid")
    p.add_argument("--template-grid", action="store_true", help="keep the template's 2 mm grid instead of --grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cohort",
        choices=["v3", "v2", "v1"],
        default="v3",
        help="v3: a disease of each subject's own (subtype, regional weights, asymmetry, cortical thinning); v2: one "
        "pattern per anatomy (the embedded models' data), with age and acquisition variety; v1: the first",
    )
    p.add_argument("--anatomies", nargs="+", default=None, help="base anatomies (default: all of the cohort's)")
    add_overwrite(p)
