"""How few structured tiles give the default mode's answers? Pooling rules on the tiles of real textures.

The ``structure`` mode scores every 320x240 tile whose structure is at least 0.4 of the frame's most structured
tile (13.4 crops per 1024x768 frame on the performance table's frames): its cost is the network's, per crop. This
script scores **every** tile of every frame once (the real-texture benchmark's 42 semi-real series, the two public
real series, the in-focus vendor and FEI images; bundled default weights unless given), keeps each tile's score
and structure (``--cache`` file, so that rules can be compared again without the network), and then pools the
same tile scores by each rule:

- ``all >= 0.4`` — every one of them (the rule before);
- ``top k`` — the k most structured of those tiles (k = 1 ... 6);
- ``spread k`` — k of those tiles evenly spread in reading order; ``k = 5/16``: 5 per 16 tiles of the frame's
  grid (5 of a 1024x768 frame's 16; never fewer than 4), the rule the default mode adopted.

For each rule: the semi-real series from held-out sources (best frame exact, Spearman >= 0.9, fitted focus within
half a step, mean / worst Spearman, in-focus frame's median score), the public series (picks right, Spearman),
the in-focus images' scores (lowest, and the largest change from today's rule) and the mean number of crops per
frame. Run: python benchmarks/fewer_tiles.py [WEIGHTS] [--cache runs/fewer_tiles.npz]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_textures import VENDOR_IMAGES, _names_in, fitted_focus_error
from semireal_catalogue import DATA, build, catalogue

from napari_sem_focus.io.series import read_series
from napari_sem_focus.scoring.infer import model_magnification, score_frames
from napari_sem_focus.scoring.structure import (
    RELATIVE_THRESHOLD,
    STRUCTURE_FLOOR,
    StructureMap,
    spread_sample,
    structured_tiles,
)
from napari_sem_focus.scoring.tiles import CROP_SIZE
from napari_sem_focus.scoring.weights import load_model, read_weights_info
from napari_sem_focus.simulate.optics import magnification_from_pixel_size
from napari_sem_focus.training.evaluate import real_series, spearman


def tiles_of(model, frames: list[np.ndarray], mag: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tile scores, tile structures) of every tile of each frame, in reading order."""
    out = []
    for frame, result in zip(frames, score_frames(frames, mag, model, "tiles", batch_size=32), strict=True):
        structure = StructureMap(frame).regions(result.tile_origins, CROP_SIZE)
        out.append((np.asarray(result.tile_scores, float), np.asarray(structure, float)))
    return out


def collect(model, trained: set[str], seed: int = 0) -> dict:
    """Every tile's score and structure: semi-real series (with their truth), public series, in-focus images."""
    data: dict = {"semireal": [], "public": [], "vendor": []}
    started = time.time()
    for source, setting in catalogue():
        frames, pixel = build(source, setting, seed=seed)
        images = [f.image.astype(np.float32) / 255.0 for f in frames]
        truth = -np.array([f.probe.effective_diameter_px for f in frames])
        tiles = tiles_of(model, images, magnification_from_pixel_size(pixel))
        held_out = Path(source.path).name not in trained
        data["semireal"].append(
            {"series": f"{source.name}/{setting}", "held_out": held_out, "truth": truth, "tiles": tiles}
        )
        print(f"  {source.name}/{setting:12s} ({time.time() - started:4.0f} s)", file=sys.stderr, flush=True)
    for name, files, ranks, common in real_series(DATA):
        images = list(read_series(files, common_crop=common).frames())
        for mag in (5000.0, 20000.0) if "deepfocus" in name else (5000.0,):
            tiles = tiles_of(model, images, mag)
            data["public"].append({"series": f"{name[:24]} @ {mag:g}x", "truth": -np.asarray(ranks), "tiles": tiles})
    for relative in VENDOR_IMAGES:
        series = read_series(DATA / relative)
        mag, _ = model_magnification(series)
        data["vendor"].append({"image": Path(relative).name[:34], "tiles": tiles_of(model, [series.frame(0)], mag)})
    return data


def chosen(structure: np.ndarray, rule: str) -> np.ndarray:
    """Indices of the tiles ``rule`` averages (every tile when none shows structure)."""
    top = structure.max()
    if top < STRUCTURE_FLOOR:
        return np.arange(len(structure))
    keep = np.flatnonzero(structure >= RELATIVE_THRESHOLD * top)
    if rule == "all >= 0.4":
        return keep
    if rule == "spread 5/16":  # the rule scoring adopted, as scoring applies it
        return np.flatnonzero(structured_tiles(structure))
    kind, k = rule.split()
    if "/" in k:  # a share of the frame's tile grid, never fewer than 4 tiles
        num, den = (int(v) for v in k.split("/"))
        k = max(4, -(-len(structure) * num // den))
    k = int(k)
    if len(keep) <= k:
        return keep
    if kind == "top":
        return np.sort(keep[np.argsort(-structure[keep], kind="stable")[:k]])
    return keep[spread_sample(len(keep), k)]  # evenly spread in reading order, as the scoring does


def frame_score(tiles: tuple[np.ndarray, np.ndarray], rule: str) -> tuple[float, int]:
    scores, structure = tiles
    idx = chosen(structure, rule)
    return float(np.mean(scores[idx])), len(idx)


def evaluate(data: dict, rule: str) -> dict:
    rows = {"rule": rule}
    crops, frames = 0, 0
    exact = sp_ok = fit_ok = 0
    sps, in_focus = [], []
    for entry in data["semireal"]:
        pooled = [frame_score(t, rule) for t in entry["tiles"]]
        crops += sum(n for _, n in pooled)
        frames += len(pooled)
        if not entry["held_out"]:
            continue
        values, truth = np.array([s for s, _ in pooled]), entry["truth"]
        best = int(np.argmax(truth))
        exact += int(truth[int(np.argmax(values))] == truth.max())
        sp = spearman(values, truth)
        sps.append(sp)
        sp_ok += int(sp >= 0.9)
        fit_ok += int(fitted_focus_error(values, best) <= 0.5)
        in_focus.append(values[best])
    rows |= {"exact": exact, "spearman >= 0.9": sp_ok, "fit <= 0.5 step": fit_ok}
    rows |= {"mean / worst spearman": f"{np.mean(sps):.3f} / {np.min(sps):.3f}"}
    rows["in-focus median"] = round(float(np.median(in_focus)), 2)
    public = []
    for entry in data["public"]:
        values = np.array([frame_score(t, rule)[0] for t in entry["tiles"]])
        right = entry["truth"][int(np.argmax(values))] == entry["truth"].max()
        public.append(f"{'ok' if right else 'WRONG'} {spearman(values, entry['truth']):.2f}")
    rows["public series (pick, Spearman)"] = ", ".join(public)
    vendor = np.array([frame_score(e["tiles"][0], rule)[0] for e in data["vendor"]])
    base = np.array([frame_score(e["tiles"][0], "all >= 0.4")[0] for e in data["vendor"]])
    rows["in-focus images: lowest, largest change"] = f"{vendor.min():.2f}, {np.abs(vendor - base).max():.2f}"
    rows["crops / frame"] = round(crops / frames, 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", nargs="?", default=None)
    parser.add_argument("--seed", type=int, default=0, help="noise draw of the semi-real series (default 0)")
    parser.add_argument("--cache", type=Path, help="tile scores kept here (default runs/fewer_tiles_seedN.pkl)")
    args = parser.parse_args()
    args.cache = args.cache or Path(f"runs/fewer_tiles_seed{args.seed}.pkl")
    if args.cache.is_file():
        data = pickle.loads(args.cache.read_bytes())
    else:
        model = load_model(args.weights)
        info = read_weights_info(args.weights)
        data_facts = [d for d in info.facts.get("data", []) if isinstance(d, str)]
        trained = {Path(d).name for d in data_facts} | {n for d in data_facts for n in _names_in(d)}
        data = collect(model, trained, args.seed)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        args.cache.write_bytes(pickle.dumps(data))
    from napari_sem_focus.scoring.report import format_table

    rules = ["all >= 0.4"] + [f"top {k}" for k in range(1, 7)] + [f"spread {k}" for k in range(3, 7)]
    rules += ["top 4/16", "top 5/16", "spread 5/16"]
    print(format_table([evaluate(data, rule) for rule in rules]))
    print("\nIn-focus vendor and FEI images, the frame's score by rule (crops scored)")
    shown = ["all >= 0.4", "top 4", "top 5", "spread 5", "top 6"]
    rows = []
    for entry in data["vendor"]:
        row = {"image": entry["image"]}
        for rule in shown:
            score, n = frame_score(entry["tiles"][0], rule)
            row[rule] = f"{score:.2f} ({n})"
        rows.append(row)
    print(format_table(rows))


if __name__ == "__main__":
    main()
