"""``sem-focus autofocus``: the closed-loop autofocus on the virtual SEM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import SemFocusError


def add_autofocus_parser(sub: Any) -> None:
    from ..autofocus import SCORERS, STRATEGIES

    af = sub.add_parser(
        "autofocus",
        help="closed-loop autofocus over the working distance (on the virtual SEM; microscopes: the Python API)",
    )
    af.add_argument("--virtual", action="store_true", help="run on the simulator's virtual SEM")
    af.add_argument("--specimen", default="tinball", help="virtual SEM: specimen family")
    af.add_argument("--mag", type=float, default=5000.0, help="virtual SEM: magnification")
    af.add_argument("--dose", type=float, default=200.0, metavar="E_PER_PX", help="virtual SEM: electrons per pixel")
    af.add_argument("--astig", type=float, default=0.0, metavar="UM", help="virtual SEM: astigmatism (µm)")
    af.add_argument("--drift", type=float, default=0.0, metavar="UM", help="virtual SEM: focus drift per scan (µm)")
    af.add_argument("--seed", type=int, default=0, help="virtual SEM: specimen and noise seed")
    af.add_argument(
        "--start-offset-um", type=float, default=40.0, help="virtual SEM: start this far from best focus (µm)"
    )
    af.add_argument("--strategy", default=STRATEGIES[0], choices=list(STRATEGIES))
    af.add_argument("--scorer", default=SCORERS[0], choices=list(SCORERS), help="what the search maximises")
    af.add_argument("--weights", default=None, help="learned scorer: 'default' or a .safetensors file")
    af.add_argument(
        "--range-um", type=float, help="search within start ± this (µm); default: where the specimen is visible"
    )
    af.add_argument("--step-um", type=float, help="first step (µm); default: a quarter of the range")
    af.add_argument("--max-scans", type=int, default=12, help="most scans in all (default 12)")
    af.add_argument("--plot", type=Path, help="write the search path (on the true score curve) as a PNG")
    af.add_argument("--json", action="store_true", help="print the result as JSON")
    af.set_defaults(func=_cmd_autofocus)


def _cmd_autofocus(args: argparse.Namespace) -> int:
    """``sem-focus autofocus --virtual``: the search on the virtual SEM, each scan printed, the result last."""
    from ..autofocus import iter_autofocus, make_scorer
    from ..report import save_autofocus_plot, to_json

    if not args.virtual:
        raise SemFocusError(
            "give --virtual (the simulator's microscope); to drive a real microscope, call "
            "napari_sem_focus.autofocus.autofocus(acquire, start_wd_mm, scorer) with your acquire(wd_mm) function"
        )
    from ..simulate.frame import FrameParams
    from ..simulate.virtual_sem import VirtualSEM

    beam = FrameParams(
        family=args.specimen, magnification=args.mag, electrons_per_px=args.dose, astig_um=args.astig, seed=args.seed
    )
    sem = VirtualSEM(beam, true_wd_mm=5.0, drift_um_per_scan=args.drift)
    start, range_um = sem.search_setup(args.start_offset_um)
    range_um = args.range_um or range_um
    scorer = make_scorer(args.scorer, args.mag, args.weights)
    search = iter_autofocus(
        sem, start, scorer, args.strategy, range_um, args.step_um, args.max_scans, keep_images=False
    )
    print(
        f"virtual SEM: {args.specimen}, {args.mag:g}x, {args.dose:g} e/px; start {args.start_offset_um:+g} µm from "
        f"focus; search ±{range_um:.1f} µm; depth of field ±{sem.depth_of_field_um():.2f} µm",
        file=sys.stderr,
    )
    while True:
        try:
            scan = next(search)
        except StopIteration as stop:
            result = stop.value
            break
        if not args.json:
            print(
                f"scan {scan.index + 1:2d}: WD {scan.working_distance_mm:.5f} mm  score {scan.score:6.2f}  "
                f"(true defocus {sem.defocus_um(scan.working_distance_mm):+8.2f} µm)"
            )
    final_defocus = sem.defocus_um(result.best_wd_mm)
    if args.json:
        truth = {"final_defocus_um": final_defocus, "depth_of_field_um": sem.depth_of_field_um()}
        print(to_json(result.to_dict() | truth))
    else:
        print(result.summary())
        print(f"true defocus at the end: {final_defocus:+.2f} µm (depth of field ±{sem.depth_of_field_um():.2f} µm)")
    if args.plot:
        curve = sem.true_curve(start - range_um * 1e-3, start + range_um * 1e-3, 301)
        print(f"plot written to {save_autofocus_plot(args.plot, result, curve)}", file=sys.stderr)
    return 0 if result.status in ("focused", "no peak") else 1
