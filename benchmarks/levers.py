"""Matched-budget study of training levers on the CPU (issue #14): the same minutes, data and evaluation for each.

Every arm trains the paper's network from scratch with ``sem-focus train`` for the same wall-clock budget on the
same machine (run nothing else meanwhile), on frames simulated on the fly from the same fixed-seed ``train``
split, and is then scored with ``sem-focus eval`` on the same test split (the paper's 320x240 centre crop), all
arms in one run. The arms differ in one lever each from ``baseline`` (the ``fast`` recipe: AdamW 1e-3, warm-up
and cosine decay over the budget, batch 32, 192x144 crops, bf16 where native, the ``bce`` loss).

    python benchmarks/levers.py --minutes 12 --test runs/data/test/labels.csv --heldout runs/data/heldout/labels.csv
    python benchmarks/levers.py --arms baseline aux --minutes 12 --test runs/data/test/labels.csv

Outputs go to ``--out`` (default runs/levers): ``ARM.safetensors`` and ``ARM.log`` per arm (an arm whose weights
exist is not trained again: the study resumes where it stopped), ``eval.json`` and the table printed at the end.
A short budget measures how fast each lever learns at the start; a lever that helps only late does not show.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from semireal_catalogue import DATA  # ../shared/data, found as every benchmark finds it

#: the real textures the shipped weights were trained on (docs/training.md)
TEXTURES = [
    str(DATA / "fei_sem2surface" / name)
    for name in ("P33_scale1_detectorA.tif", "P33_scale2s3_detectorA.tif", "P33_scale2s3_detectorC.tif")
]

#: arm name -> (what it changes, extra ``sem-focus train`` arguments)
ARMS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("the fast recipe", []),
    "repeat": ("the baseline again: how far two identical runs differ", []),
    "aux": ("+ auxiliary physics targets (probe diameter px, dose, astigmatism), weight 0.3", ["--aux-weight", "0.3"]),
    "progressive": ("progressive crops: 96x72 for the first 40 %, 144x108 to 70 %, then 192x144", ["--progressive"]),
    "semireal": (
        "+ semi-real frames (3 FEI P33 textures, 1 in 6 frames)",
        ["--real-textures", *TEXTURES, "--real-frames", "40000"],
    ),
    "echo2": ("data echoing: 2 steps per fresh batch (--echo 2)", ["--echo", "2"]),
    "lr3e-3": ("AdamW lr 3e-3 instead of 1e-3", ["--lr", "3e-3"]),
    "paper": ("the paper's recipe: SGD 2e-4, momentum 0.9, batch 1, 320x240, float32", ["--recipe", "paper"]),
}


def train_arm(name: str, minutes: float, out: Path, frames: int) -> Path:
    weights = out / f"{name}.safetensors"
    if weights.exists():
        print(f"{name}: {weights} exists, not trained again", flush=True)
        return weights
    args = [
        "sem-focus",
        "train",
        "--simulate",
        str(frames),
        "--max-minutes",
        str(minutes),
        "--out",
        str(weights),
        "--checkpoint",
        str(out / f"{name}.ckpt.pt"),
        *ARMS[name][1],
    ]
    print(f"{name}: {' '.join(args)}", flush=True)
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, check=True)
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--minutes", type=float, default=14.0, help="training budget of each arm (wall clock)")
    parser.add_argument("--frames", type=int, default=200_000, help="simulated training frames (never repeated)")
    parser.add_argument("--test", type=Path, required=True, help="labels CSV of the test split")
    parser.add_argument("--heldout", type=Path, help="labels CSV of the held-out family (optional)")
    parser.add_argument("--out", type=Path, default=Path("runs/levers"))
    parser.add_argument("--no-eval", action="store_true", help="train only")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    weights = {name: train_arm(name, args.minutes, args.out, args.frames) for name in args.arms}
    if args.no_eval:
        return
    first, *others = weights
    report = args.out / "eval.json"
    command = ["sem-focus", "eval", "--weights", str(weights[first]), "--test", str(args.test)]
    if args.heldout:
        command += ["--heldout", str(args.heldout)]
    command += ["--compare", *(f"{name}={weights[name]}" for name in others), "--json", str(report)]
    subprocess.run(command, check=True)
    figures = json.loads(report.read_text())
    print(table(weights, figures, first))


def table(weights: dict[str, Path], figures: dict, first: str) -> str:
    """The study as a Markdown table: steps and images seen in the budget, test RMSE per magnification."""
    from napari_sem_focus.scoring.weights import read_weights_info

    def column(split: str, name: str) -> dict[str, float]:
        return figures[split]["Proposed (ResNet18 + mag)" if name == first else name]

    mags = ("500", "1000", "2000", "5000", "10000")
    lines = [
        "| arm | what changes | steps | images seen | test total | " + " / ".join(mags) + " | held-out |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, path in weights.items():
        facts = read_weights_info(path).facts
        steps, batch = int(facts["steps"]), int(facts["recipe"]["batch_size"])
        test = column("table2", name)
        held = f"{column('heldout', name)['total']:.3f}" if "heldout" in figures else "-"
        lines.append(
            f"| {name} | {ARMS[name][0]} | {steps:,} | {steps * batch:,} | {test['total']:.3f} | "
            + " / ".join(f"{test[m]:.3f}" for m in mags)
            + f" | {held} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
