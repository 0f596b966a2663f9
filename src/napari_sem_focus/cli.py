"""``sem-focus``: the command line. Thin argument parsing over the core modules.

Every user error (bad file, bad option) prints one line ``sem-focus: error: ...`` and exits with status 2;
no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import SemFocusError
from .infer import CROP_SIZE


def _add_series_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--databar",
        type=int,
        default=None,
        metavar="ROWS",
        help="data-bar rows to exclude (default: from metadata, else detected from the pixels)",
    )
    parser.add_argument(
        "--common-crop",
        action="store_true",
        help="accept frames of different sizes by centre-cropping them to a common size",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--out", type=Path, help="also write the table as CSV to this file")
    parser.add_argument("--plot", type=Path, help="write the focus curve as a PNG to this file")


def build_parser() -> argparse.ArgumentParser:
    """The ``sem-focus`` argument parser (subcommands)."""
    parser = argparse.ArgumentParser(
        prog="sem-focus",
        description="Score how well focused SEM images are and pick the best frame of a focus series.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="print an image's or series' metadata and the detected data bar")
    info.add_argument("path", type=Path, help="image file, multi-page TIFF, or folder of frames")
    info.add_argument("--json", action="store_true", help="print JSON")
    _add_series_options(info)
    info.set_defaults(func=_cmd_info)

    from .metrics import METRICS

    metrics = sub.add_parser("metrics", help="classic focus metrics per frame, and the best frame")
    metrics.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="images, stacks or folders")
    metrics.add_argument(
        "--metric",
        dest="metrics",
        action="append",
        choices=list(METRICS),
        help="metric(s) to compute (repeatable; default: all)",
    )
    metrics.add_argument(
        "--rank-by",
        default="normalized_variance",
        choices=list(METRICS),
        help="metric that picks the best frame (default: normalized_variance)",
    )
    metrics.add_argument(
        "--smooth",
        type=float,
        default=0.0,
        metavar="SIGMA_PX",
        help="Gaussian pre-filter sigma in pixels (0 = textbook formulas; 1 resists shot noise)",
    )
    _add_series_options(metrics)
    _add_output_options(metrics)
    metrics.set_defaults(func=_cmd_metrics)

    _add_score_parser(sub)
    _add_simulate_parser(sub)
    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_autofocus_parser(sub)
    _add_watch_parser(sub)
    export = sub.add_parser("export", help="turn a training checkpoint into a .safetensors weights file")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(func=_cmd_export)
    return parser


def _add_watch_parser(sub: Any) -> None:
    from .infer import MODES

    watch = sub.add_parser(
        "watch", help="score each new frame written into a folder, live (half-written files are waited for)"
    )
    watch.add_argument("folder", type=Path, help="the folder the microscope writes frames into")
    watch.add_argument("--mag", type=float, help="magnification when the files have none (127 mm over 1024 px)")
    watch.add_argument("--mode", default=MODES[0], choices=list(MODES), help="scoring mode (default: structure)")
    watch.add_argument("--weights", default=None, help="'default' (bundled) or a .safetensors file")
    watch.add_argument("--new-only", action="store_true", help="ignore the files already in the folder")
    watch.add_argument("--poll", type=float, default=0.5, metavar="S", help="seconds between looks (default 0.5)")
    watch.add_argument(
        "--idle-exit", type=float, metavar="S", help="stop when no new frame came for S seconds (default: never)"
    )
    watch.add_argument("--out", type=Path, help="also write the rows as CSV to this file (rewritten per frame)")
    watch.set_defaults(func=_cmd_watch)


def _cmd_watch(args: argparse.Namespace) -> int:
    """``sem-focus watch FOLDER``: one line per new frame with its score and the best so far (Ctrl-C stops)."""
    from .live import iter_live_scores
    from .report import write_csv

    print(f"watching {args.folder} (Ctrl-C stops)", file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    frames = iter_live_scores(
        args.folder,
        None,  # each file's own metadata first; --mag only for files that state none
        args.weights,
        args.mode,
        fallback_magnification=args.mag,
        poll_s=args.poll,
        include_existing=not args.new_only,
        idle_exit_s=args.idle_exit,
    )
    for live in frames:
        if live.error is not None:
            print(f"{live.index:4d}  {live.path.name}: {live.error}", flush=True)
            continue
        row = live.row()
        rows.append(row)
        best = row if best is None or row["score"] > best["score"] else best
        wd = f"  WD {row['working_distance_mm']:.5f} mm" if row["working_distance_mm"] is not None else ""
        print(
            f"{live.index:4d}  {live.path.name}: score {row['score']:.2f}{wd}  "
            f"(best so far: {best['file']}, {best['score']:.2f})",
            flush=True,
        )
        if args.out:
            write_csv(args.out, rows)
    return 0


def _add_autofocus_parser(sub: Any) -> None:
    from .autofocus import SCORERS, STRATEGIES

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
    from .autofocus import iter_autofocus, make_scorer
    from .report import save_autofocus_plot, to_json

    if not args.virtual:
        raise SemFocusError(
            "give --virtual (the simulator's microscope); to drive a real microscope, call "
            "napari_sem_focus.autofocus.autofocus(acquire, start_wd_mm, scorer) with your acquire(wd_mm) function"
        )
    from .simulate.virtual_sem import VirtualSEM

    sem = VirtualSEM(args.specimen, args.mag, 5.0, args.dose, args.astig, args.drift, seed=args.seed)
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


def _add_eval_parser(sub: Any) -> None:
    ev = sub.add_parser("eval", help="the paper's Tables 1 and 2 on labelled test frames, and real-series picks")
    ev.add_argument("--weights", default=None, help="the model to evaluate ('default' or .safetensors)")
    ev.add_argument("--test", type=Path, nargs="+", required=True, help="labels CSV(s) of the test split")
    ev.add_argument("--heldout", type=Path, nargs="*", default=[], help="labels CSV(s) of the held-out family")
    ev.add_argument(
        "--highmag", type=Path, nargs="*", default=[], help="labels CSV(s) of the 'highmag' split (20k-100k)"
    )
    ev.add_argument(
        "--train", type=Path, nargs="*", default=[], help="training labels CSV(s) to fit the absolute-variance baseline"
    )
    ev.add_argument(
        "--compare",
        nargs="*",
        default=[],
        metavar="NAME=WEIGHTS",
        help="other models for the tables, e.g. 'ResNet50=r50.safetensors'",
    )
    ev.add_argument("--real", type=Path, default=None, help="folder with the real series (../shared/data)")
    ev.add_argument(
        "--real-mag",
        type=float,
        nargs="*",
        default=[5000.0, 20000.0],
        help="magnifications assumed for real series without metadata",
    )
    ev.add_argument("--json", type=Path, help="also write all figures as JSON to this file")
    ev.set_defaults(func=_cmd_eval)


def _add_score_parser(sub: Any) -> None:
    from .infer import MODES
    from .samples import SAMPLES

    score = sub.add_parser("score", help="learned focus score (0-10) per frame, best frame, focus curve")
    score.add_argument("paths", type=Path, nargs="*", metavar="PATH", help="images, stacks or folders")
    score.add_argument("--sample", choices=list(SAMPLES), help="score a bundled (simulated) sample series")
    score.add_argument("--weights", default=None, help="'default' (bundled) or a .safetensors file")
    score.add_argument(
        "--mag", type=float, default=None, help="magnification for the model (default: from the pixel size / metadata)"
    )
    score.add_argument(
        "--mode",
        default=MODES[0],
        choices=list(MODES),
        help="structure (default): mean over the 320x240 tiles that show specimen structure; "
        "center: the paper's centre crop; tiles: upper quartile over all tiles",
    )
    score.add_argument(
        "--roi",
        type=float,
        nargs=4,
        metavar=("X", "Y", "W", "H"),
        help="score only this region of every frame (pixels from the top-left corner; at least 320x240)",
    )
    score.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    score.add_argument("--metrics", action="store_true", help="add the classic focus metrics as columns")
    _add_series_options(score)
    _add_output_options(score)
    score.set_defaults(func=_cmd_score)


def _add_simulate_parser(sub: Any) -> None:
    from .simulate import SPECIMENS
    from .simulate.series import SPLIT_SEEDS

    simulate = sub.add_parser("simulate", help="simulate SEM focus series and labelled datasets")
    sim_sub = simulate.add_subparsers(dest="what", required=True, metavar="WHAT")
    series = sim_sub.add_parser("series", help="a through-focus series: multi-page TIFF + labels CSV")
    series.add_argument("--specimen", default="tinball", choices=list(SPECIMENS))
    series.add_argument("--mag", type=float, default=5000.0, help="magnification (127 mm over 1024 px)")
    series.add_argument("--steps", type=int, default=21, help="number of focus steps")
    series.add_argument("--size", type=int, nargs=2, default=(1024, 768), metavar=("W", "H"), help="frame size px")
    series.add_argument("--seed", type=int, default=0)
    series.add_argument("--astig", type=float, default=0.0, metavar="UM", help="astigmatism (µm)")
    series.add_argument("--dose", type=float, default=200.0, metavar="E_PER_PX", help="electrons per pixel")
    series.add_argument(
        "--inverted", action="store_true", help="inverted material contrast: dark objects on a bright substrate"
    )
    series.add_argument("--noisy-frame", type=int, default=None, help="index of one very noisy fast-scan frame")
    series.add_argument("--offset", type=float, default=0.0, help="best focus offset in steps (sub-step)")
    series.add_argument("--out", type=Path, required=True, help="output folder")
    series.add_argument("--name", default="series", help="file stem (default: series)")
    series.set_defaults(func=_cmd_simulate_series)
    dataset = sim_sub.add_parser("dataset", help="a labelled dataset (PNG frames + labels.csv)")
    dataset.add_argument("--n", type=int, required=True, help="number of frames")
    dataset.add_argument("--split", default="train", choices=list(SPLIT_SEEDS))
    dataset.add_argument("--start", type=int, default=0, help="first frame index of the split")
    dataset.add_argument("--size", type=int, nargs=2, default=CROP_SIZE[::-1], metavar=("W", "H"))
    dataset.add_argument("--out", type=Path, required=True)
    dataset.set_defaults(func=_cmd_simulate_dataset)


def _add_train_parser(sub: Any) -> None:
    train = sub.add_parser("train", help="train or fine-tune the focus-score network")
    train.add_argument("--labels", type=Path, nargs="+", help="labels CSV file(s) to train on")
    train.add_argument("--simulate", type=int, metavar="N", help="train on N frames simulated on the fly")
    train.add_argument(
        "--real-textures",
        type=Path,
        nargs="+",
        metavar="IMAGE",
        help="in-focus real SEM images to add semi-real frames from (textured everywhere; never benchmark images)",
    )
    train.add_argument("--real-frames", type=int, default=10_000, help="semi-real frames per epoch (default 10,000)")
    train.add_argument("--blank", type=int, default=0, metavar="N", help="add N simulated 0-score frames (noise...)")
    train.add_argument("--val", type=Path, nargs="*", default=None, help="validation labels CSV file(s)")
    train.add_argument(
        "--recipe",
        default="fast",
        choices=["fast", "paper", "gpu"],
        help="fast: a 2-core CPU; paper: Yang et al. exactly (SGD, batch 1); gpu: one CUDA GPU, bf16, batch 128, "
        "data simulated by a worker on every other CPU core (docs/training.md)",
    )
    train.add_argument("--init", default=None, help="start from weights: 'default' or a .safetensors file")
    train.add_argument(
        "--regime",
        choices=["auto", "adapt", "full"],
        default="auto",
        help="adapt: few-label adaptation (trunk frozen, cross-validated, never worse; needs --init and --labels "
        "only); full: train the whole network; auto (default): adapt when --init is given with --labels only",
    )
    train.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet50"])
    train.add_argument("--no-magnification", action="store_true", help="train without the magnification input")
    train.add_argument("--epochs", type=int, help="epochs (recipe default otherwise)")
    train.add_argument("--steps", type=int, help="stop after this many optimiser steps")
    train.add_argument("--max-minutes", type=float, help="stop after this many minutes")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--warmup-steps", type=int, help="steps of linear learning-rate warm-up (recipe default)")
    train.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="keep an exponential moving average of the weights (e.g. 0.999) and write it out (docs/training.md)",
    )
    train.add_argument(
        "--freeze-batchnorm", action="store_true", help="keep BatchNorm statistics fixed (fine-tuning, small batches)"
    )
    train.add_argument(
        "--loss", choices=["mse", "bce"], help="mse (the paper) or bce on score/10 (no vanishing gradient at 0 and 10)"
    )
    train.add_argument("--crop", type=int, nargs=2, metavar=("W", "H"), help="training crop size")
    train.add_argument("--device", default=None, help="auto (cuda > mps > cpu), cpu, cuda, ... (recipe default: auto)")
    train.add_argument(
        "--workers", type=int, default=None, help="data-loader processes (recipe default: gpu one per core, else 0)"
    )
    train.add_argument("--preload", action="store_true", help="decode all training frames into memory first")
    train.add_argument("--checkpoint", type=Path, help="checkpoint file (written atomically during training)")
    train.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    train.add_argument("--out", type=Path, required=True, help="output weights (.safetensors, fp16)")
    train.set_defaults(func=_cmd_train)


# --- commands -----------------------------------------------------------------------------------------------


def _read(path: Path, args: argparse.Namespace) -> Any:
    from .io import read_series

    return read_series(path, databar_rows=args.databar, common_crop=args.common_crop)


def _cmd_info(args: argparse.Namespace) -> int:
    from .infer import model_magnification
    from .report import to_json

    series = _read(args.path, args)
    facts = series.describe()
    if args.json:
        print(to_json(facts))
        return 0
    meta = facts.pop("metadata")
    wds = facts.pop("working_distance_mm")
    print(
        f"{facts['source']}: {facts['frames']} frame(s), {facts['shape'][1]}x{facts['shape'][0]} px, {facts['dtype']}"
    )
    print(
        f"  data bar: {facts['databar_rows']} rows ({facts['databar_source']}); scored rows "
        f"{facts['scored_region_rows'][0]}-{facts['scored_region_rows'][1]}"
    )
    for key, value in meta.items():
        if key == "magnification" and value is not None:
            print(f"  magnification (vendor, as the microscope displays it): {value:g}x")
        elif key != "derived" and value is not None:
            print(f"  {key}: {value}")
    if meta["derived"]:
        print(f"  derived (not read): {', '.join(meta['derived'])}")
    if facts["reference_magnification"]:
        print(f"  reference magnification (127 mm / HFW): {facts['reference_magnification']:.0f}x")
    model_mag, source = model_magnification(series)
    if model_mag:
        print(f"  model magnification (127 mm over a 1024-px frame, from the {source}): {model_mag:.0f}x")
    else:
        print("  model magnification: unknown (no pixel size or magnification; give --mag when scoring)")
    if len(wds) > 1 and any(w is not None for w in wds):
        print("  working distance per frame (mm): " + ", ".join("-" if w is None else f"{w:g}" for w in wds))
    for note in facts["notes"]:
        print(f"  note: {note}")
    return 0


def _print_rows(args: argparse.Namespace, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    from .report import format_table, to_csv, to_json

    if args.json:
        print(to_json({"rows": rows, **summary}))
    elif args.csv:
        print(to_csv(rows), end="")
    else:
        print(format_table(rows))


def _peak_summary(rows: list[dict[str, Any]], key: str) -> tuple[Any, dict[str, Any]]:
    from .report import curve_peak

    peak, unit = curve_peak(rows, key)
    summary = {
        "rank_by": key,
        "best_frame": peak.index,
        "best_file": rows[peak.index]["file"],
        "best_value": peak.value,
        "best_focus_position": peak.position,
        "best_focus_sigma": peak.position_sigma,
        "position_unit": unit,
        "other_peaks": list(peak.other_peaks),
        "warning": peak.warning(),
    }
    return peak, summary


def _print_best(summary: dict[str, Any]) -> None:
    unit = summary["position_unit"]
    pos = f"{summary['best_focus_position']:.5g} ± {summary['best_focus_sigma']:.2g} {unit}"
    print(
        f"best frame by {summary['rank_by']}: {summary['best_frame']} ({summary['best_file']}); "
        f"fitted best focus: {pos}"
    )
    if summary["warning"]:
        print(f"warning: {summary['warning']}")


def _write_plot(plot: Path, n: int, count: int, rows: list[dict[str, Any]], key: str, peak: Any, title: str) -> None:
    """The focus-curve PNG of series ``n`` (``plot`` itself, or ``<stem>_<n>`` when several series)."""
    from .report import save_focus_plot

    path = plot if count == 1 else plot.with_stem(f"{plot.stem}_{n}")
    from .analysis import SCORE_COLUMNS

    skip = {"series", "frame", "file", "working_distance_mm", key, *SCORE_COLUMNS}
    extra = [k for k in rows[0] if k not in skip]
    save_focus_plot(path, rows, key, peak, extra, title=title)
    print(f"plot written to {path}", file=sys.stderr)


def _write_table(out: Path | None, rows: list[dict[str, Any]]) -> None:
    if out:
        from .report import write_csv

        write_csv(out, rows)
        print(f"table written to {out}", file=sys.stderr)


def _cmd_metrics(args: argparse.Namespace) -> int:
    from .analysis import series_metrics

    all_rows: list[dict[str, Any]] = []
    names = args.metrics or None
    rank_by = args.rank_by if names is None or args.rank_by in names else names[0]
    for n, path in enumerate(args.paths):
        series = _read(path, args)
        rows = list(series_metrics(series, names, args.smooth))
        peak, summary = _peak_summary(rows, rank_by)
        if len(args.paths) > 1:
            rows = [{"series": path.name} | r for r in rows]
        _print_rows(args, rows, summary)
        if not (args.csv or args.json):
            _print_best(summary)
            if len(args.paths) > 1:
                print()
        if args.plot:
            _write_plot(args.plot, n, len(args.paths), rows, rank_by, peak, str(path))
        all_rows += rows
    _write_table(args.out, all_rows)
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from .analysis import NO_STRUCTURE, score_rows, score_summary
    from .device import select_device
    from .infer import model_magnification
    from .samples import sample_series

    if not args.paths and not args.sample:
        raise SemFocusError("give one or more PATHs or --sample NAME")
    device = str(select_device(args.device))
    sources: list[tuple[str, Any]] = [(f"sample:{args.sample}", None)] if args.sample else []
    sources += [(str(p), p) for p in args.paths]
    all_rows: list[dict[str, Any]] = []
    for n, (label, path) in enumerate(sources):
        series = sample_series(args.sample) if path is None else _read(path, args)
        if args.roi:
            series = series.with_roi(args.roi, min_shape=CROP_SIZE)
            for note in series.notes:
                if note.startswith("region of interest"):
                    print(f"note: {note}", file=sys.stderr)
        mag, mag_source = model_magnification(series, args.mag)
        rows = [
            row
            for row, _ in score_rows(series, args.weights, mag, args.mode, device, metrics=None if args.metrics else ())
        ]
        peak, summary = _peak_summary(rows, "score")
        blind = [r["frame"] for r in rows if r["note"]]
        summary |= {
            "model_magnification": mag,
            "magnification_source": mag_source,
            "mode": args.mode,
            "roi": list(series.roi) if series.roi else None,
            "frames_without_structure": blind,
        }
        if len(sources) > 1:
            rows = [{"series": label} | r for r in rows]
        _print_rows(args, rows, summary)
        if not (args.csv or args.json):
            region = "" if series.roi is None else "; region x {}, y {}, {}x{} px".format(*series.roi)
            print(f"model magnification: {mag:.0f}x ({mag_source}); mode: {args.mode}{region}")
            region = series.roi is not None
            if len(rows) == 1:
                print(score_summary(rows[0], region))
            else:
                _print_best(summary)
                print(f"best frame {score_summary(rows[peak.index], region)}")
                if blind:
                    print(f"note: {NO_STRUCTURE} of frame(s) {', '.join(map(str, blind))}")
            if len(sources) > 1:
                print()
        if args.plot:
            _write_plot(args.plot, n, len(sources), rows, "score", peak, label)
        all_rows += rows
    _write_table(args.out, all_rows)
    return 0


def _cmd_simulate_series(args: argparse.Namespace) -> int:
    from .allocator import reuse_freed_memory
    from .report import format_table
    from .simulate import simulate_series, write_series

    reuse_freed_memory()

    width, height = args.size
    frames, wds = simulate_series(
        args.specimen,
        args.mag,
        args.steps,
        shape=(height, width),
        seed=args.seed,
        focus_offset_steps=args.offset,
        noisy_frame=args.noisy_frame,
        astig_um=args.astig,
        electrons_per_px=args.dose,
        inverted=args.inverted,
    )
    path = write_series(args.out, frames, wds, args.name)
    rows = [
        {"frame": i, "working_distance_mm": wd, "defocus_um": round(f.params.defocus_um, 4), "score": round(f.score, 3)}
        for i, (f, wd) in enumerate(zip(frames, wds, strict=True))
    ]
    print(format_table(rows))
    print(f"series written to {path} (labels: {path.with_name(args.name + '_labels.csv')})")
    return 0


def _cmd_simulate_dataset(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .allocator import reuse_freed_memory
    from .simulate import write_dataset

    reuse_freed_memory()

    width, height = args.size
    with tqdm(total=args.n, unit="frame", disable=None) as bar:
        csv_path = write_dataset(
            args.out, args.n, args.split, (height, width), args.start, progress=lambda i, n: bar.update(1)
        )
    print(f"{args.n} frames written; labels: {csv_path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from torch.utils.data import ConcatDataset
    from tqdm import tqdm

    from . import distributed
    from .data import LabelledImages, SemiRealFrames, SimulatedFrames
    from .train import TrainEvent, describe_setup, recipe, train
    from .weights import load_model, save_weights

    if not args.labels and not args.simulate and not args.real_textures:
        raise SemFocusError("give --labels CSV..., --simulate N or --real-textures IMAGE... as training data")
    labels_only = bool(args.labels) and not args.simulate and not args.real_textures and not args.blank
    if args.regime == "adapt" and not (labels_only and args.init):
        raise SemFocusError("--regime adapt needs --init WEIGHTS and --labels CSV... only (no simulated data)")
    if args.regime == "adapt" or (args.regime == "auto" and labels_only and args.init):
        return _adapt_from_labels(args)
    overrides: dict[str, Any] = {"arch": args.arch, "use_magnification": not args.no_magnification}
    if args.freeze_batchnorm:
        overrides["freeze_batchnorm"] = True
    for key, value in (
        ("device", args.device),
        ("num_workers", args.workers),
        ("epochs", args.epochs),
        ("max_steps", args.steps),
        ("max_minutes", args.max_minutes),
        ("batch_size", args.batch_size),
        ("lr", args.lr),
        ("warmup_steps", args.warmup_steps),
        ("ema", args.ema),
        ("loss", args.loss),
    ):
        if value is not None:
            overrides[key] = value
    if args.crop:
        overrides["crop"] = (args.crop[1], args.crop[0])
    config = recipe(args.recipe, **overrides)
    parts: list[Any] = []
    if args.labels:
        parts.append(LabelledImages(args.labels, config.crop, train=True, preload=args.preload, seed=config.seed))
    if args.simulate:
        parts.append(SimulatedFrames("train", args.simulate, crop_size=config.crop))
    if args.blank:
        parts.append(SimulatedFrames("blank", args.blank, crop_size=config.crop, train=True))
    if args.real_textures:
        parts.append(SemiRealFrames(args.real_textures, args.real_frames, config.crop, seed=config.seed))
    train_data: Any = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    if args.val:
        val_data: Any = LabelledImages(args.val, config.eval_crop, train=False, preload=args.preload)
    elif args.val is None and args.simulate:
        val_data = SimulatedFrames("val", 256, crop_size=config.eval_crop)
    else:
        val_data = None
    init = load_model(args.init) if args.init else None
    main_process = distributed.current().is_main  # under torchrun, process 0 alone logs and writes files
    if main_process:
        print(describe_setup(config), file=sys.stderr, flush=True)
    started = time.time()
    with tqdm(total=1, unit="step", disable=None if main_process else True, dynamic_ncols=True) as bar:

        def report(event: TrainEvent) -> None:
            bar.total = event.total
            bar.n = event.step
            post = {"loss": f"{event.loss:.3f}", "rmse": f"{event.train_rmse:.3f}", "lr": f"{event.lr:.2g}"}
            if event.val_rmse is not None:
                post["val_rmse"] = f"{event.val_rmse:.3f}"
            if event.val_rmse is not None or bar.disable:  # no terminal: one log line per event
                val = f" val_rmse {event.val_rmse:.4f}" if event.val_rmse is not None else ""
                speed = f", {event.images_per_s:.0f} images/s" if event.images_per_s else ""
                print(
                    f"step {event.step}/{event.total} loss {event.loss:.4f} rmse {event.train_rmse:.3f} "
                    f"lr {event.lr:.3g}{val} "
                    f"({event.elapsed_s / 60:.1f} min{speed})",
                    file=sys.stderr,
                    flush=True,
                )
            bar.set_postfix(post, refresh=True)

        result = train(
            config,
            train_data,
            val_data,
            checkpoint=args.checkpoint,
            resume=args.resume,
            init_model=init,
            progress=report,
        )
    if not main_process:
        return 0
    facts = {
        "recipe": config.to_dict(),
        "steps": result.step,
        "train_frames": len(train_data),
        "init": str(args.init),
        "minutes": round((time.time() - started) / 60, 1),
        **result.metrics,
        "data": _data_description(args),
    }
    save_weights(result.model, args.out, facts)
    print(f"weights written to {args.out} (steps {result.step}, val RMSE {result.metrics.get('val_rmse', 'n/a')})")
    if result.last_model is not None:  # --ema: the average went to --out; the last step's weights beside it
        last = Path(args.out).with_suffix(".last.safetensors")
        save_weights(result.last_model, last, {**facts, "ema": "off: the last step's weights"})
        print(f"last step's weights (not averaged) written to {last}")
    return 0


def _adapt_from_labels(args: argparse.Namespace) -> int:
    """``sem-focus train --labels CSV... --init W``: few-label adaptation (:mod:`.adapt`); writes the weights only
    when it helps, and a JSON of the cross-validated figures next to ``--out`` either way."""

    from .adapt import adapt
    from .label_store import label_samples, read_label_files
    from .weights import facts_path, load_model, save_weights_and_facts, write_facts

    samples = label_samples(read_label_files(args.labels))
    model = load_model(args.init, "cpu")

    def report(event: Any) -> None:
        print(f"{event.stage}: {event.message} ({event.elapsed_s:.0f} s)", file=sys.stderr, flush=True)

    result = adapt(model, samples, progress=report)
    facts = {"init": str(args.init), "labels": [str(p) for p in args.labels], **result.metrics}
    print(result.summary())
    if result.adopted:
        save_weights_and_facts(result.model, args.out, facts)
        print(f"weights written to {args.out} (facts: {facts_path(args.out)})")
    else:
        write_facts(args.out, facts)
        print(f"no weights written: keep using {args.init} (facts: {facts_path(args.out)})")
    return 0


def _data_description(args: argparse.Namespace) -> list[str]:
    """What a training run was trained on, for the weights file's facts."""
    out = [str(p) for p in args.labels or []]
    if args.simulate:
        out.append(f"simulated train split, {args.simulate} frames")
    if args.blank:
        out.append(f"simulated blank split, {args.blank} frames")
    if args.real_textures:
        out.append(f"semi-real, {args.real_frames} frames, from {[p.name for p in args.real_textures]}")
    return out


def _cmd_export(args: argparse.Namespace) -> int:
    from .model import FocusScoreNet, ModelConfig
    from .train import load_checkpoint
    from .weights import save_weights

    state = load_checkpoint(args.checkpoint)
    model = FocusScoreNet(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    facts = {
        "recipe": state.get("config"),
        "steps": state.get("step"),
        **state.get("metrics", {}),
        "from_checkpoint": str(args.checkpoint),
    }
    save_weights(model, args.out, facts)
    print(f"weights of step {state.get('step')} written to {args.out}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .allocator import reuse_freed_memory
    from .evaluate import RmseTable, absolute_variance_rmse, models_rmse, real_series_picks
    from .report import format_table, to_json
    from .simulate import HIGH_MAGNIFICATIONS

    reuse_freed_memory()  # batch after batch of large tensors: measured 1.2-1.4x faster on 300 test frames

    models: dict[str, str | None] = {}
    for item in args.compare:
        name, _, path = item.partition("=")
        models[name] = path
    models["Proposed (ResNet18 + mag)"] = args.weights
    results: dict[str, Any] = {}
    columns: dict[str, dict[str, float]] = {}
    if args.train:
        columns["Absolute Variance"] = absolute_variance_rmse(args.train, args.test)
    columns.update(models_rmse(models, args.test))
    print("Table 1. RMSE averaged over the magnifications 500-10,000 (simulated test split)")
    for name, col in columns.items():
        print(f"  {name:40s} {col['total']:.4f}")
    print("\nTable 2. RMSE per magnification (simulated test split)")
    print(RmseTable(columns).format())
    results["table2"] = columns
    if args.heldout:
        held = models_rmse(models, args.heldout)
        results["heldout"] = held
        print("\nHeld-out specimen family (fibres, never trained on): RMSE")
        for name, col in held.items():
            print(f"  {name:40s} {col['total']:.4f}")
    if args.highmag:
        high = models_rmse(models, args.highmag, magnifications=HIGH_MAGNIFICATIONS)
        results["highmag"] = high
        print("\nHigh magnifications (split 'highmag'): RMSE per magnification")
        print(RmseTable(high).format(HIGH_MAGNIFICATIONS))
    if args.real is not None:
        picks = real_series_picks(args.weights, args.real, args.real_mag)
        results["real"] = picks
        print("\nReal series with a known order (picked frame; Spearman with the known sharpness order)")
        print(format_table([{k: v for k, v in r.items() if k != "scores"} for r in picks]))
    if args.json:
        from .atomic import atomic_write_text

        atomic_write_text(args.json, to_json(results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sem-focus``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.getLogger("tifffile").setLevel(logging.ERROR)  # its damage reports become our one-line errors
    try:
        return int(args.func(args) or 0)
    except SemFocusError as err:
        print(f"sem-focus: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sem-focus: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
