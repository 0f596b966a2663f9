"""``sem-focus``: the command line. Thin argument parsing over the core modules.

Every user error (bad file, bad option) prints one line ``sem-focus: error: ...`` and exits with status 2;
no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import SemFocusError


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
    return parser


# --- commands -----------------------------------------------------------------------------------------------


def _read(path: Path, args: argparse.Namespace) -> Any:
    from .io import read_series

    return read_series(path, databar_rows=args.databar, common_crop=args.common_crop)


def _cmd_info(args: argparse.Namespace) -> int:
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
        if key != "derived" and value is not None:
            print(f"  {key}: {value}")
    if meta["derived"]:
        print(f"  derived (not read): {', '.join(meta['derived'])}")
    if facts["reference_magnification"]:
        print(f"  reference magnification (127 mm / HFW): {facts['reference_magnification']:.0f}x")
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
    from .focus_curve import find_best_focus
    from .report import focus_positions

    xs, xlabel = focus_positions(rows)
    peak = find_best_focus([r[key] for r in rows], xs)
    summary = {
        "rank_by": key,
        "best_frame": peak.index,
        "best_file": rows[peak.index]["file"],
        "best_value": peak.value,
        "best_focus_position": peak.position,
        "best_focus_sigma": peak.position_sigma,
        "position_unit": "mm" if xlabel != "frame" else "frame",
    }
    return peak, summary


def _print_best(summary: dict[str, Any]) -> None:
    unit = summary["position_unit"]
    pos = f"{summary['best_focus_position']:.5g} ± {summary['best_focus_sigma']:.2g} {unit}"
    print(
        f"best frame by {summary['rank_by']}: {summary['best_frame']} ({summary['best_file']}); "
        f"fitted best focus: {pos}"
    )


def _cmd_metrics(args: argparse.Namespace) -> int:
    from .analysis import series_metrics
    from .report import save_focus_plot, write_csv

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
            plot = args.plot if len(args.paths) == 1 else args.plot.with_stem(f"{args.plot.stem}_{n}")
            others = [k for k in rows[0] if k not in ("series", "frame", "file", "working_distance_mm", rank_by)]
            save_focus_plot(plot, rows, rank_by, peak, others, title=str(path))
            print(f"plot written to {plot}", file=sys.stderr)
        all_rows += rows
    if args.out:
        write_csv(args.out, all_rows)
        print(f"table written to {args.out}", file=sys.stderr)
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
