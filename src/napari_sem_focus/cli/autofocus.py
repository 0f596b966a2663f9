"""``sem-focus autofocus``: the closed-loop autofocus on the virtual SEM or on a microscope through fibsem-os."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SemFocusError

#: The search range (± µm) on a microscope when --range-um is not given: fibsem-os's own coarse sweep (50 µm).
MICROSCOPE_RANGE_UM = 25.0


def add_autofocus_parser(sub: Any) -> None:
    from ..focusing.autofocus import SCORERS, STRATEGIES
    from ..focusing.microscopes.fibsem_sem import MANUFACTURERS

    af = sub.add_parser(
        "autofocus",
        help="closed-loop autofocus over the working distance: the virtual SEM, or a microscope through fibsem-os",
    )
    where = af.add_argument_group("which microscope")
    where.add_argument("--virtual", action="store_true", help="run on the simulator's virtual SEM")
    where.add_argument(
        "--microscope",
        choices=["fibsem"],
        help="drive a microscope through fibsem-os (extra 'microscope'): Thermo Fisher, TESCAN or fibsem's demo",
    )
    where.add_argument(
        "--manufacturer",
        default="Demo",
        choices=list(MANUFACTURERS),
        help="fibsem: 'Demo' (no hardware; its images drawn by the virtual SEM), 'Thermo' or 'Tescan'",
    )
    where.add_argument("--ip", metavar="ADDRESS", help="fibsem: the microscope PC's address (default: the config's)")
    where.add_argument("--config", type=Path, metavar="FILE", help="fibsem: a microscope-configuration YAML")

    probe = af.add_argument_group("probe frames (fibsem)")
    probe.add_argument("--resolution", default="768x512", metavar="WxH", help="pixels of a search frame (768x512)")
    probe.add_argument("--dwell-us", type=float, default=0.5, help="pixel dwell time (µs; default 0.5)")
    probe.add_argument(
        "--hfw-um", type=float, help="horizontal field width (µm); default the microscope's (Demo: from --mag)"
    )
    probe.add_argument(
        "--wd-tolerance-um", type=float, default=0.5, help="largest accepted WD read-back error (µm; default 0.5)"
    )
    probe.add_argument("--acquire-timeout-s", type=float, help="a frame taking longer fails the search (restored)")
    probe.add_argument("--autocontrast", action="store_true", help="run the microscope's auto contrast first")

    sim = af.add_argument_group("the virtual SEM (--virtual, and behind fibsem's Demo)")
    sim.add_argument("--specimen", default="tinball", help="specimen family")
    sim.add_argument("--mag", type=float, default=5000.0, help="magnification (127 mm over 1024 px)")
    sim.add_argument(
        "--dose", type=float, default=200.0, metavar="E_PER_PX", help="electrons per pixel (Demo: at --dwell-us)"
    )
    sim.add_argument(
        "--astig-um", "--astig", type=float, default=0.0, dest="astig", help="astigmatism: focal-line separation (µm)"
    )
    sim.add_argument("--astig-angle-deg", type=float, default=30.0, help="orientation of the astigmatism (°)")
    sim.add_argument(
        "--stig-gain-um",
        type=float,
        default=20.0,
        help="astigmatism one stigmator unit corrects (µm; hidden from the search)",
    )
    sim.add_argument(
        "--stig-rotation-deg", type=float, default=0.0, help="rotation of the stigmators' axes (°; hidden)"
    )
    sim.add_argument("--drift", type=float, default=0.0, metavar="UM", help="--virtual: focus drift per scan (µm)")
    sim.add_argument("--seed", type=int, default=0, help="specimen and noise seed")
    sim.add_argument("--start-offset-um", type=float, default=40.0, help="start this far from best focus (µm)")

    search = af.add_argument_group("the search")
    search.add_argument("--strategy", default=STRATEGIES[0], choices=list(STRATEGIES))
    search.add_argument("--scorer", default=SCORERS[0], choices=list(SCORERS), help="what the search maximises")
    search.add_argument("--weights", default=None, help="learned scorer: 'default' or a .safetensors file")
    search.add_argument(
        "--range-um",
        type=float,
        help=f"search within start ± this (µm); default: --virtual where the specimen is visible, a microscope "
        f"±{MICROSCOPE_RANGE_UM:g}",
    )
    search.add_argument("--step-um", type=float, help="first step (µm); default: a quarter of the range")
    search.add_argument("--max-scans", type=int, help="most scans in all (default 12; with --stigmate 24)")
    search.add_argument("--stigmate", action="store_true", help="set the two stigmators too (focus + stigmation)")
    search.add_argument(
        "--stig-method", default="model", choices=["model", "alternating"], help="--stigmate: the search method"
    )
    search.add_argument(
        "--stig-range", type=float, default=1.0, help="--stigmate: each stigmator within start ± this (units)"
    )
    search.add_argument("--stig-step", type=float, help="--stigmate: first stigmator step (default: range / 4)")
    search.add_argument(
        "--no-beam-model",
        action="store_true",
        help="--stigmate (model): line searches on the score alone, without reading the beam from the frames' spectra",
    )
    search.add_argument("--plot", type=Path, help="write the search path as a PNG (on the true curve when known)")
    search.add_argument("--json", action="store_true", help="print the result as JSON")
    af.set_defaults(func=_cmd_autofocus)


def _cmd_autofocus(args: argparse.Namespace) -> int:
    """``sem-focus autofocus``: the search, each scan printed, the result last."""
    if args.microscope == "fibsem":
        return _microscope_search(args)
    if args.virtual:
        return _virtual_search(args)
    raise SemFocusError(
        "give --virtual (the simulator's microscope) or --microscope fibsem --manufacturer Demo|Thermo|Tescan; "
        "from Python, napari_sem_focus.focusing.autofocus.autofocus(acquire, start_wd_mm, scorer) takes any "
        "acquire(wd_mm)"
    )


def _virtual_search(args: argparse.Namespace) -> int:
    from ..focusing.autofocus import iter_autofocus, make_scorer
    from ..simulate.frame import FrameParams
    from ..simulate.virtual_sem import VirtualSEM

    beam = FrameParams(
        family=args.specimen,
        magnification=args.mag,
        electrons_per_px=args.dose,
        astig_um=args.astig,
        astig_angle_deg=args.astig_angle_deg,
        seed=args.seed,
    )
    sem = VirtualSEM(
        beam,
        true_wd_mm=5.0,
        drift_um_per_scan=args.drift,
        stig_gain_um=args.stig_gain_um,
        stig_rotation_deg=args.stig_rotation_deg,
    )
    start, range_um = sem.search_setup(args.start_offset_um)
    range_um = args.range_um or range_um
    scorer = make_scorer(args.scorer, args.mag, args.weights)
    print(
        f"virtual SEM: {args.specimen}, {args.mag:g}x, {args.dose:g} e/px; start {args.start_offset_um:+g} µm from "
        f"focus; search ±{range_um:.1f} µm; depth of field ±{sem.depth_of_field_um():.2f} µm"
        + (f"; astigmatism {args.astig:g} µm at {args.astig_angle_deg:g}°" if args.astig else ""),
        file=sys.stderr,
    )
    span = (start - range_um * 1e-3, start + range_um * 1e-3)
    if args.stigmate:
        from ..focusing.stigmation import iter_focus_and_stigmate

        stig = iter_focus_and_stigmate(sem, start, sem.stigmator, scorer, **_stig_options(args, range_um))
        return _report_stig(args, stig, sem, span)
    search = iter_autofocus(
        sem, start, scorer, args.strategy, range_um, args.step_um, args.max_scans or 12, keep_images=False
    )
    return _report(args, search, sem, span)


def _stig_options(args: argparse.Namespace, range_um: float) -> dict[str, Any]:
    """The focus + stigmation search's options from the command line."""
    return {
        "method": args.stig_method,
        "range_um": range_um,
        "stig_range": args.stig_range,
        "step_um": args.step_um,
        "stig_step": args.stig_step,
        "max_acquisitions": args.max_scans or 24,
        "keep_images": False,
        "beam_model": not args.no_beam_model,
    }


def _microscope_search(args: argparse.Namespace) -> int:
    from ..focusing.autofocus import make_scorer
    from ..focusing.microscopes.fibsem_sem import (
        FibsemSEM,
        ProbeSettings,
        iter_microscope_autofocus,
        iter_microscope_focus_and_stigmate,
        parse_resolution,
    )

    resolution = parse_resolution(args.resolution)
    truth = None
    hfw_um = args.hfw_um
    if args.manufacturer == "Demo":
        microscope, truth, hfw_um = _virtual_demo(args, resolution, hfw_um)
    else:
        from ..focusing.microscopes.fibsem_sem import connect

        microscope = connect(args.manufacturer, args.ip, args.config)
    probe = ProbeSettings(resolution, args.dwell_us, hfw_um)
    sem = FibsemSEM(microscope, probe, wd_tolerance_um=args.wd_tolerance_um, autocontrast=args.autocontrast)
    range_um = args.range_um or MICROSCOPE_RANGE_UM
    scorer = make_scorer(args.scorer, sem.magnification, args.weights)
    start = sem.working_distance_mm()
    options = {"acquire_timeout_s": args.acquire_timeout_s} if args.acquire_timeout_s else {}
    if args.stigmate:
        search = iter_microscope_focus_and_stigmate(sem, scorer, **_stig_options(args, range_um), **options)
    else:
        search = iter_microscope_autofocus(
            sem,
            scorer,
            strategy=args.strategy,
            range_um=range_um,
            step_um=args.step_um,
            max_acquisitions=args.max_scans or 12,
            keep_images=False,
            **options,
        )
    print(
        f"fibsem {args.manufacturer}: electron beam, WD {start:.6f} mm; probe {resolution[0]}x{resolution[1]} px, "
        f"{args.dwell_us:g} µs, field width {sem.field_width_um():.2f} µm (model magnification "
        f"{sem.magnification():.0f}x); search ±{range_um:g} µm",
        file=sys.stderr,
    )
    if truth is not None:
        print(
            f"demo: its images drawn by the virtual SEM ({args.specimen}, {truth.frame.electrons_per_px:.0f} e/px), "
            f"best focus hidden {args.start_offset_um:+g} µm from the start; depth of field "
            f"±{truth.depth_of_field_um():.2f} µm",
            file=sys.stderr,
        )
    span = (start - range_um * 1e-3, start + range_um * 1e-3)
    status = _report_stig(args, search, truth, span) if args.stigmate else _report(args, search, truth, span)
    stig = sem.stigmation()
    print(
        f"working distance now {sem.working_distance_mm():.6f} mm, stigmators ({stig[0]:+.4f}, {stig[1]:+.4f})",
        file=sys.stderr,
    )
    return status


def _virtual_demo(args: argparse.Namespace, resolution: tuple[int, int], hfw_um: float | None) -> tuple[Any, ...]:
    """fibsem's demo microscope showing the virtual SEM (``--specimen``, ``--mag``, ``--dose``...): the microscope,
    the virtual SEM behind its probe frames (the truth), and the probe's field width (µm)."""
    from ..focusing.microscopes.fibsem_demo import set_dose, truth, virtual_demo_microscope
    from ..io.metadata import field_width_um
    from ..simulate.frame import FrameParams

    hfw_um = hfw_um or field_width_um(args.mag, resolution[0])  # the field width that gives --mag
    frame = FrameParams(family=args.specimen, astig_um=args.astig, astig_angle_deg=args.astig_angle_deg, seed=args.seed)
    microscope = virtual_demo_microscope(
        frame,
        focus_offset_um=args.start_offset_um,
        stig_gain_um=args.stig_gain_um,
        stig_rotation_deg=args.stig_rotation_deg,
    )
    set_dose(microscope, args.dose, args.dwell_us)
    return microscope, truth(microscope, resolution, hfw_um, args.dwell_us), hfw_um


def _report(args: argparse.Namespace, search: Generator[Any, None, Any], truth: Any, span: tuple[float, float]) -> int:
    """Run ``search`` printing each scan (with the true defocus when ``truth``, a virtual SEM, is known), then the
    result (text or JSON) and the plot; the exit status: 0 focused or no peak, 1 otherwise."""
    defocus: Callable[[float], str] = (
        (lambda wd: f"  (true defocus {truth.defocus_um(wd):+8.2f} µm)") if truth is not None else (lambda wd: "")
    )
    while True:
        try:
            scan = next(search)
        except StopIteration as stop:
            result = stop.value
            break
        if not args.json:
            print(
                f"scan {scan.index + 1:2d}: WD {scan.working_distance_mm:.5f} mm  score {scan.score:6.2f}"
                f"{defocus(scan.working_distance_mm)}",
                flush=True,
            )
    facts: dict[str, Any] = {}
    if truth is not None:
        final_wd = result.final_wd_mm if result.final_wd_mm is not None else result.best_wd_mm
        facts = {
            "final_defocus_um": truth.defocus_um(final_wd),
            "depth_of_field_um": truth.depth_of_field_um(),
            "final_true_score": truth.true_score(final_wd),
            "start_true_score": truth.true_score(result.start_wd_mm),
        }
    if args.json:
        from ..scoring.report import to_json

        print(to_json(result.to_dict() | facts))
    else:
        print(result.summary())
        if truth is not None:
            print(
                f"true defocus at the end: {facts['final_defocus_um']:+.2f} µm (depth of field "
                f"±{facts['depth_of_field_um']:.2f} µm); true score {facts['final_true_score']:.2f} "
                f"(start {facts['start_true_score']:.2f})"
            )
    if args.plot:
        from ..scoring.report import save_autofocus_plot

        curve = truth.true_curve(*span, 301) if truth is not None else None
        print(f"plot written to {save_autofocus_plot(args.plot, result, curve)}", file=sys.stderr)
    return 0 if result.status in ("focused", "no peak") else 1


def _report_stig(
    args: argparse.Namespace, search: Generator[Any, None, Any], truth: Any, span: tuple[float, float]
) -> int:
    """Run a focus + stigmation ``search`` printing each scan (WD, stigmators, score; the truth when ``truth``, a
    virtual SEM, is known), then the result (text or JSON) and the two-panel plot; exit status as :func:`_report`."""

    def true_facts(s: Any) -> str:
        if truth is None:
            return ""
        residual = truth.residual_astigmatism((s.stig_x, s.stig_y))[0]
        return f"  (true defocus {truth.defocus_um(s.working_distance_mm):+8.2f} µm, astigmatism {residual:6.2f} µm)"

    while True:
        try:
            scan = next(search)
        except StopIteration as stop:
            result = stop.value
            break
        if not args.json:
            s = scan.setting
            print(
                f"scan {scan.index + 1:2d}: WD {s.working_distance_mm:.5f} mm  stig ({s.stig_x:+.4f}, {s.stig_y:+.4f})"
                f"  score {scan.score:6.2f}{true_facts(s)}",
                flush=True,
            )
    facts: dict[str, Any] = {}
    if truth is not None:
        final, start = result.final, result.start
        final_stig, start_stig = (final.stig_x, final.stig_y), (start.stig_x, start.stig_y)
        facts = {
            "final_defocus_um": truth.defocus_um(final.working_distance_mm),
            "final_residual_astig_um": truth.residual_astigmatism(final_stig)[0],
            "depth_of_field_um": truth.depth_of_field_um(),
            "final_true_score": truth.true_score(final.working_distance_mm, final_stig),
            "start_true_score": truth.true_score(start.working_distance_mm, start_stig),
            "best_stigmator": list(truth.best_stigmator()),
        }
    if args.json:
        from ..scoring.report import to_json

        print(to_json(result.to_dict() | facts))
    else:
        print(result.summary())
        if truth is not None:
            print(
                f"true defocus at the end: {facts['final_defocus_um']:+.2f} µm, astigmatism left "
                f"{facts['final_residual_astig_um']:.2f} µm (depth of field ±{facts['depth_of_field_um']:.2f} µm); "
                f"true score {facts['final_true_score']:.2f} (start {facts['start_true_score']:.2f})"
            )
    if args.plot:
        from ..scoring.report import save_focus_stig_plot

        curve = best = None
        if truth is not None:
            best = truth.best_stigmator()
            wds = [float(w) for w in np.linspace(*span, 301)]
            curve = (wds, [truth.true_score(w, best) for w in wds])
        print(f"plot written to {save_focus_stig_plot(args.plot, result, curve, best)}", file=sys.stderr)
    return 0 if result.status == "focused" else 1
