"""``sem-focus``: the command line. Thin argument parsing over the core modules.

Every user error (bad file, bad option) prints one line ``sem-focus: error: ...`` and exits with status 2;
no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..allocator import reuse_freed_memory
from ..errors import SemFocusError
from . import autofocus, scoring, training


def build_parser() -> argparse.ArgumentParser:
    """The ``sem-focus`` argument parser (subcommands)."""
    parser = argparse.ArgumentParser(
        prog="sem-focus",
        description="Score how well focused SEM images are and pick the best frame of a focus series.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    scoring.add_info_parser(sub)
    scoring.add_metrics_parser(sub)
    scoring.add_score_parser(sub)
    training.add_simulate_parser(sub)
    training.add_train_parser(sub)
    training.add_eval_parser(sub)
    autofocus.add_autofocus_parser(sub)
    scoring.add_watch_parser(sub)
    scoring.add_archive_parser(sub)
    training.add_export_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sem-focus``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.getLogger("tifffile").setLevel(logging.ERROR)  # its damage reports become our one-line errors
    reuse_freed_memory()  # every command: frame after frame, batch after batch (napari_sem_focus.allocator)
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
