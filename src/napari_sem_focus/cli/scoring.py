"""Subcommands that read and score images: ``info``, ``metrics``, ``score`` and ``watch`` (each parser next to its
handler)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import SemFocusError
from ..scoring.tiles import CROP_SIZE
from ._common import (
    add_output_options,
    add_series_options,
    peak_summary,
    print_best,
    print_rows,
    read_series_arg,
    write_plot,
    write_table,
)


def add_info_parser(sub: Any) -> None:
    """``sem-focus info``."""
    info = sub.add_parser("info", help="print an image's or series' metadata and the detected data bar")
    info.add_argument("path", type=Path, help="image file, multi-page TIFF, or folder of frames")
    info.add_argument("--json", action="store_true", help="print JSON")
    add_series_options(info)
    info.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from ..scoring.infer import model_magnification
    from ..scoring.report import to_json

    series = read_series_arg(args.path, args)
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


def add_metrics_parser(sub: Any) -> None:
    """``sem-focus metrics``."""
    from ..scoring.metrics import METRICS

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
    add_series_options(metrics)
    add_output_options(metrics)
    metrics.set_defaults(func=_cmd_metrics)


def _cmd_metrics(args: argparse.Namespace) -> int:
    from ..scoring.analysis import series_metrics

    all_rows: list[dict[str, Any]] = []
    names = args.metrics or None
    rank_by = args.rank_by if names is None or args.rank_by in names else names[0]
    for n, path in enumerate(args.paths):
        series = read_series_arg(path, args)
        rows = list(series_metrics(series, names, args.smooth))
        peak, summary = peak_summary(rows, rank_by)
        if len(args.paths) > 1:
            rows = [{"series": path.name} | r for r in rows]
        print_rows(args, rows, summary)
        if not (args.csv or args.json):
            print_best(summary)
            if len(args.paths) > 1:
                print()
        if args.plot:
            write_plot(args.plot, n, len(args.paths), rows, rank_by, peak, str(path))
        all_rows += rows
    write_table(args.out, all_rows)
    return 0


def add_score_parser(sub: Any) -> None:
    from ..scoring.infer import MODES
    from ..simulate.samples import SAMPLES

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
        help="structure (default): mean over the 320x240 tiles that show specimen structure (at most 5 in 16); "
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
    add_series_options(score)
    add_output_options(score)
    score.set_defaults(func=_cmd_score)


def _cmd_score(args: argparse.Namespace) -> int:
    from ..device import select_device
    from ..scoring.analysis import NO_STRUCTURE, score_rows, score_summary
    from ..scoring.infer import magnification_note, model_magnification
    from ..simulate.samples import sample_series

    if not args.paths and not args.sample:
        raise SemFocusError("give one or more PATHs or --sample NAME")
    device = str(select_device(args.device))
    sources: list[tuple[str, Any]] = [(f"sample:{args.sample}", None)] if args.sample else []
    sources += [(str(p), p) for p in args.paths]
    all_rows: list[dict[str, Any]] = []
    for n, (label, path) in enumerate(sources):
        series = sample_series(args.sample) if path is None else read_series_arg(path, args)
        if args.roi:
            series = series.with_roi(args.roi, min_shape=CROP_SIZE)
            for note in series.notes:
                if note.startswith("region of interest"):
                    print(f"note: {note}", file=sys.stderr)
        mag, mag_source = model_magnification(series, args.mag)
        known_notes = len(series.notes)
        rows = [
            row
            for row, _ in score_rows(series, args.weights, mag, args.mode, device, metrics=None if args.metrics else ())
        ]
        for note in series.notes[known_notes:]:  # what scoring found out (e.g. a large frame has no metrics)
            print(f"note: {note}", file=sys.stderr)
        peak, summary = peak_summary(rows, "score")
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
        print_rows(args, rows, summary)
        if not (args.csv or args.json):
            region = "" if series.roi is None else "; region x {}, y {}, {}x{} px".format(*series.roi)
            note = magnification_note(series, mag_source)
            print(f"model magnification: {mag:.0f}x ({note}); mode: {args.mode}{region}")
            region = series.roi is not None
            if len(rows) == 1:
                print(score_summary(rows[0], region))
            else:
                print_best(summary)
                print(f"best frame {score_summary(rows[peak.index], region)}")
                if blind:
                    print(f"note: {NO_STRUCTURE} of frame(s) {', '.join(map(str, blind))}")
            if len(sources) > 1:
                print()
        if args.plot:
            write_plot(args.plot, n, len(sources), rows, "score", peak, label)
        all_rows += rows
    write_table(args.out, all_rows)
    return 0


def add_watch_parser(sub: Any) -> None:
    from ..scoring.infer import MODES

    watch = sub.add_parser(
        "watch", help="score each new frame written into a folder, live (half-written files are waited for)"
    )
    watch.add_argument("folder", type=Path, nargs="?", help="the folder the microscope writes frames into")
    watch.add_argument(
        "--microscope",
        choices=["fibsem"],
        help="instead of a folder: score the live frames of a microscope through fibsem-os (extra 'microscope')",
    )
    watch.add_argument(
        "--manufacturer",
        default="Demo",
        choices=["Demo", "Thermo", "Tescan"],
        help="fibsem: 'Demo' (no hardware; its images drawn by the virtual SEM), 'Thermo' or 'Tescan'",
    )
    watch.add_argument("--ip", metavar="ADDRESS", help="fibsem: the microscope PC's address")
    watch.add_argument("--config", type=Path, metavar="FILE", help="fibsem: a microscope-configuration YAML")
    watch.add_argument("--frames", type=int, metavar="N", help="--microscope: stop after N frames (default: Ctrl-C)")
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
    from ..focusing.live import iter_live_scores
    from ..scoring.report import write_csv

    rows: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    if args.microscope:
        frames = _microscope_frames(args)
    elif args.folder is None:
        raise SemFocusError("give the FOLDER to watch, or --microscope fibsem")
    else:
        print(f"watching {args.folder} (Ctrl-C stops)", file=sys.stderr, flush=True)
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


def _microscope_frames(args: argparse.Namespace) -> Any:
    """The scored live frames of a fibsem microscope (its live acquisition started and, at the end, stopped); the
    demo shows the virtual SEM's tin balls in focus."""
    from ..focusing.microscopes.fibsem_sem import connect, iter_live_microscope_scores

    if args.manufacturer == "Demo":
        from ..focusing.microscopes.fibsem_demo import virtual_demo_microscope

        microscope = virtual_demo_microscope()
    else:
        microscope = connect(args.manufacturer, args.ip, args.config)
    print(f"scoring the live frames of fibsem {args.manufacturer} (Ctrl-C stops)", file=sys.stderr, flush=True)
    return iter_live_microscope_scores(microscope, args.mag, args.weights, args.mode, max_frames=args.frames)


def add_archive_parser(sub: Any) -> None:
    """``sem-focus archive``."""
    from ..scoring.infer import MODES

    archive = sub.add_parser(
        "archive",
        help="score every image below a folder into a CSV or Parquet table: streamed, batched, resumable "
        "(archive-scale focus QC)",
    )
    archive.add_argument("root", type=Path, help="the folder tree to score (hidden files and folders skipped)")
    archive.add_argument(
        "--out",
        type=Path,
        required=True,
        help="results: a .csv file (appended as results come) or a .parquet folder of parts (needs pyarrow)",
    )
    archive.add_argument("--mag", type=float, help="magnification for files without metadata (127 mm over 1024 px)")
    archive.add_argument("--mode", default=MODES[0], choices=list(MODES), help="scoring mode (default: structure)")
    archive.add_argument("--weights", default=None, help="'default' (bundled) or a .safetensors file")
    archive.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    archive.add_argument("--workers", type=int, default=0, help="processes that read and prepare files (default 0)")
    archive.add_argument("--batch-size", type=int, default=32, help="crops per model batch (default 32)")
    archive.add_argument(
        "--restart", action="store_true", help="start afresh (default: resume, skipping the frames already in --out)"
    )
    archive.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="score on a Dask distributed cluster (scheduler address, e.g. tcp://host:8786); each worker loads the "
        "model once",
    )
    archive.set_defaults(func=_cmd_archive)


def _cmd_archive(args: argparse.Namespace) -> int:
    """``sem-focus archive ROOT --out CSV|PARQUET``: a progress bar (files, rate, ETA), then a one-line summary."""
    from tqdm import tqdm

    from ..batch.archive import iter_score_archive
    from ..device import select_device

    device = str(select_device(args.device))
    job = iter_score_archive(
        args.root,
        args.out,
        args.weights,
        args.mode,
        args.mag,
        device,
        args.workers,
        args.batch_size,
        not args.restart,
        dask=args.dask,
    )
    with tqdm(unit="file", dynamic_ncols=True, disable=None) as bar:
        while True:
            try:
                progress = next(job)
            except StopIteration as stop:
                progress = stop.value
                break
            bar.total = progress.files_total
            bar.update(progress.files_done - bar.n)
    skipped = f"; {progress.skipped_frames} frames already in it were skipped" if progress.skipped_frames else ""
    print(f"{progress.rows_written} frames of {progress.files_total} files written to {args.out}{skipped}")
    return 0
