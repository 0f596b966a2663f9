"""Subcommands that make data and models: ``simulate``, ``train``, ``export`` and ``eval`` (each parser next to its
handler)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import SemFocusError
from ..scoring.tiles import CROP_SIZE


def add_simulate_parser(sub: Any) -> None:
    from ..simulate import SPECIMENS
    from ..simulate.series import SPLIT_SEEDS

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


def _cmd_simulate_series(args: argparse.Namespace) -> int:
    from ..scoring.report import format_table
    from ..simulate import simulate_series, write_series

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

    from ..simulate import write_dataset

    width, height = args.size
    with tqdm(total=args.n, unit="frame", disable=None) as bar:
        csv_path = write_dataset(
            args.out, args.n, args.split, (height, width), args.start, progress=lambda i, n: bar.update(1)
        )
    print(f"{args.n} frames written; labels: {csv_path}")
    return 0


def add_train_parser(sub: Any) -> None:
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
        "--echo",
        type=int,
        metavar="N",
        help="optimiser steps per fresh batch, each a new random draw (with flips) from the last 4 fresh batches: "
        "data echoing, for a GPU that the simulator cannot keep busy (default 1: off; docs/training.md)",
    )
    train.add_argument(
        "--aux-weight",
        type=float,
        metavar="W",
        help="also learn physics targets of simulated and semi-real frames (probe diameter in pixels, dose, "
        "astigmatism) with a training-only head, their loss weighted by W (default 0: off; docs/training.md)",
    )
    train.add_argument(
        "--progressive",
        action="store_true",
        help="progressive crops: half the crop's side for the first 40 %% of the run, three quarters to 70 %%, "
        "then the whole crop (docs/training.md)",
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
    train.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="few-label adaptation: draw the adopted remap over your labelled frames into this image",
    )
    train.set_defaults(func=_cmd_train)


def _config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~napari_sem_focus.training.train.TrainConfig` of ``--recipe`` with the options given."""
    from ..training.train import recipe

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
        ("echo", args.echo),
        ("loss", args.loss),
        ("aux_weight", args.aux_weight),
    ):
        if value is not None:
            overrides[key] = value
    if args.progressive:
        overrides["progressive"] = True
    if args.crop:
        overrides["crop"] = (args.crop[1], args.crop[0])
    return recipe(args.recipe, **overrides)


def _training_data(args: argparse.Namespace, config: Any) -> tuple[Any, Any]:
    """(training data, validation data or None): labelled images, simulated, blank and semi-real frames."""
    from torch.utils.data import ConcatDataset

    from ..training.data import LabelledImages, SemiRealFrames, SimulatedFrames

    aux = config.aux_weight > 0
    parts: list[Any] = []
    if args.labels:
        parts.append(
            LabelledImages(args.labels, config.crop, train=True, preload=args.preload, seed=config.seed, aux=aux)
        )
    if args.simulate:
        parts.append(SimulatedFrames("train", args.simulate, crop_size=config.crop, aux=aux))
    if args.blank:
        parts.append(SimulatedFrames("blank", args.blank, crop_size=config.crop, train=True, aux=aux))
    if args.real_textures:
        parts.append(SemiRealFrames(args.real_textures, args.real_frames, config.crop, seed=config.seed, aux=aux))
    train_data: Any = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    if args.val:
        return train_data, LabelledImages(args.val, config.eval_crop, train=False, preload=args.preload)
    if args.val is None and args.simulate:
        return train_data, SimulatedFrames("val", 256, crop_size=config.eval_crop)
    return train_data, None


def _progress_printer(bar: Any, config: Any) -> Any:
    """What shows a :class:`~napari_sem_focus.training.train.TrainEvent`: the progress bar, and one log line per
    validation (or per event without a terminal)."""

    def report(event: Any) -> None:
        bar.total = event.total
        bar.n = event.step
        post = {"loss": f"{event.loss:.3f}", "rmse": f"{event.train_rmse:.3f}", "lr": f"{event.lr:.2g}"}
        if event.val_rmse is not None:
            post["val_rmse"] = f"{event.val_rmse:.3f}"
        if event.val_rmse is not None or bar.disable:  # no terminal: one log line per event
            val = f" val_rmse {event.val_rmse:.4f}" if event.val_rmse is not None else ""
            speed = f", {event.images_per_s:.0f} images/s" if event.images_per_s else ""
            if event.images_per_s and config.echo > 1:
                speed += f" of which {event.images_per_s / config.echo:.0f} fresh"
            print(
                f"step {event.step}/{event.total} loss {event.loss:.4f} rmse {event.train_rmse:.3f} "
                f"lr {event.lr:.3g}{val} "
                f"({event.elapsed_s / 60:.1f} min{speed})",
                file=sys.stderr,
                flush=True,
            )
        bar.set_postfix(post, refresh=True)

    return report


def _cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..scoring.weights import load_model, save_weights
    from ..training import distributed
    from ..training.train import describe_setup, train

    if not args.labels and not args.simulate and not args.real_textures:
        raise SemFocusError("give --labels CSV..., --simulate N or --real-textures IMAGE... as training data")
    labels_only = bool(args.labels) and not args.simulate and not args.real_textures and not args.blank
    if args.regime == "adapt" and not (labels_only and args.init):
        raise SemFocusError("--regime adapt needs --init WEIGHTS and --labels CSV... only (no simulated data)")
    if args.regime == "adapt" or (args.regime == "auto" and labels_only and args.init):
        return _adapt_from_labels(args)
    if args.plot:
        raise SemFocusError("--plot draws a few-label adaptation (--init WEIGHTS with --labels CSV... only)")
    config = _config_from_args(args)
    train_data, val_data = _training_data(args, config)
    init = load_model(args.init) if args.init else None
    main_process = distributed.current().is_main  # under torchrun, process 0 alone logs and writes files
    if main_process:
        print(describe_setup(config), file=sys.stderr, flush=True)
    started = time.time()
    with tqdm(total=1, unit="step", disable=None if main_process else True, dynamic_ncols=True) as bar:
        result = train(
            config,
            train_data,
            val_data,
            checkpoint=args.checkpoint,
            resume=args.resume,
            init_model=init,
            progress=_progress_printer(bar, config),
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

    from ..scoring.weights import facts_path, load_model, save_weights_and_facts, write_facts
    from ..training.adapt import adapt
    from ..training.label_store import label_samples, read_label_files

    samples = label_samples(read_label_files(args.labels))
    model = load_model(args.init, "cpu")

    def report(event: Any) -> None:
        print(f"{event.stage}: {event.message} ({event.elapsed_s:.0f} s)", file=sys.stderr, flush=True)

    result = adapt(model, samples, progress=report)
    facts = {"init": str(args.init), "labels": [str(p) for p in args.labels], **result.metrics}
    print(result.summary())
    if args.plot:
        from ..scoring.report import save_adaptation_plot

        print(f"remap over your labels drawn in {save_adaptation_plot(args.plot, result)}")
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


def add_export_parser(sub: Any) -> None:
    """``sem-focus export``."""
    export = sub.add_parser("export", help="turn a training checkpoint into a .safetensors weights file")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--averaged", action="store_true", help="export the weight average of a run trained with --ema")
    export.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from ..scoring.weights import save_weights
    from ..training.train import load_checkpoint, model_from_checkpoint

    state = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(state, averaged=args.averaged)
    facts = {
        "recipe": state.get("config"),
        "steps": state.get("step"),
        **state.get("metrics", {}),
        "from_checkpoint": str(args.checkpoint),
        "averaged": bool(args.averaged),
    }
    save_weights(model, args.out, facts)
    print(f"weights of step {state.get('step')} written to {args.out}")
    return 0


def add_eval_parser(sub: Any) -> None:
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


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..scoring.report import format_table, to_json
    from ..simulate import HIGH_MAGNIFICATIONS
    from ..training.evaluate import RmseTable, absolute_variance_rmse, models_rmse, real_series_picks

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
        from ..atomic import atomic_write_text

        atomic_write_text(args.json, to_json(results))
    return 0
