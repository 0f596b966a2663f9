"""What several subcommands share: the series and output options, reading a series, printing rows and the best
frame, writing the plot and the table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_series_options(parser: argparse.ArgumentParser) -> None:
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


def add_output_options(parser: argparse.ArgumentParser) -> None:
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--out", type=Path, help="also write the table as CSV to this file")
    parser.add_argument("--plot", type=Path, help="write the focus curve as a PNG to this file")


def read_series_arg(path: Path, args: argparse.Namespace) -> Any:
    from ..io.series import read_series

    return read_series(path, databar_rows=args.databar, common_crop=args.common_crop)


def print_rows(args: argparse.Namespace, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    from ..scoring.report import format_table, to_csv, to_json

    if args.json:
        print(to_json({"rows": rows, **summary}))
    elif args.csv:
        print(to_csv(rows), end="")
    else:
        print(format_table(rows))


def peak_summary(rows: list[dict[str, Any]], key: str) -> tuple[Any, dict[str, Any]]:
    from ..scoring.report import curve_peak

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


def print_best(summary: dict[str, Any]) -> None:
    unit = summary["position_unit"]
    pos = f"{summary['best_focus_position']:.5g} ± {summary['best_focus_sigma']:.2g} {unit}"
    print(
        f"best frame by {summary['rank_by']}: {summary['best_frame']} ({summary['best_file']}); "
        f"fitted best focus: {pos}"
    )
    if summary["warning"]:
        print(f"warning: {summary['warning']}")


def write_plot(plot: Path, n: int, count: int, rows: list[dict[str, Any]], key: str, peak: Any, title: str) -> None:
    """The focus-curve PNG of series ``n`` (``plot`` itself, or ``<stem>_<n>`` when several series)."""
    from ..scoring.analysis import metric_columns
    from ..scoring.report import save_focus_plot

    path = plot if count == 1 else plot.with_stem(f"{plot.stem}_{n}")
    save_focus_plot(path, rows, key, peak, metric_columns(rows, key), title=title)
    print(f"plot written to {path}", file=sys.stderr)


def write_table(out: Path | None, rows: list[dict[str, Any]]) -> None:
    if out:
        from ..scoring.report import write_csv

        write_csv(out, rows)
        print(f"table written to {out}", file=sys.stderr)
