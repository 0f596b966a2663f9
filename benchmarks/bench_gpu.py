"""GPU speed: scoring throughput at the paper's 320x240 crop, and the training step's ceiling.

Prints, on one CUDA device, side by side in one run:

- scoring, the network alone: 320x240 crops already on the GPU, float32 vs bfloat16 autocast, contiguous vs
  channels_last, batch 256 — images/s;
- scoring frames held in RAM (:func:`napari_sem_focus.scoring.infer.score_frames`, centre mode: crops cut on the
  CPU from 1024x768 frames, copied to the GPU) — frames/s;
- scoring a 1024x768 8-bit stack from disk as ``sem-focus score --device cuda`` does (``score_series``: frames read
  and prepared in several threads, pinned batches), per mode, beside the network alone on the same crops in the
  same batches — frames/s and their ratio;
- training steps on synthetic batches (the recipe ``gpu``: batch 128, bf16, channels_last, AdamW) — images/s, the
  ceiling that simulator workers must feed (a real run prints its own images/s).

Target (issue #14): >= 3,000 images/s scoring at 320x240 on an H100-class card.
Run: python benchmarks/bench_gpu.py [--weights W] [--seconds 5]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from napari_sem_focus.scoring.infer import CROP_SIZE, score_frames
from napari_sem_focus.scoring.model import normalize_magnification
from napari_sem_focus.scoring.weights import load_model


def timed(fn, seconds: float) -> float:
    """Calls of ``fn`` per second over about ``seconds`` (after two warm-up calls), the GPU synchronised."""
    fn()
    fn()
    torch.cuda.synchronize()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    torch.cuda.synchronize()
    return calls / (time.perf_counter() - start)


def from_disk(model, seconds: float, n: int = 200) -> None:
    """End to end from a 1024x768 8-bit stack on disk as ``sem-focus score --device cuda`` scores it (frames read
    and prepared by several threads, pinned batches), per mode, beside the network alone on the same crops already
    on the GPU in the same batches; frames/s and their ratio (the issue's target: >= 0.5)."""
    import tempfile
    from pathlib import Path

    from napari_sem_focus.io.series import read_series, write_series_tiff
    from napari_sem_focus.scoring.infer import BATCH_SIZE, frame_crops, inference_autocast, score_series
    from napari_sem_focus.simulate.samples import sample_series

    sample = sample_series("tinball")
    frames = [(sample.frame(i % len(sample)) * 255).round().astype(np.uint8) for i in range(n)]
    mag = normalize_magnification(5000.0)
    with tempfile.TemporaryDirectory() as tmp:
        stack = write_series_tiff(Path(tmp) / "stack.tif", frames, [{"magnification": 5000.0}] * n)
        for mode in ("center", "structure"):
            series = read_series(stack)
            crops = np.concatenate([np.stack(frame_crops(series.frame(i), mode)[0]) for i in range(n)])
            on_gpu = torch.from_numpy(crops)[:, None].to("cuda").contiguous(memory_format=torch.channels_last)

            @torch.inference_mode()
            def network(on_gpu=on_gpu) -> None:
                with inference_autocast("cuda"):
                    for i in range(0, len(on_gpu), BATCH_SIZE):
                        model(on_gpu[i : i + BATCH_SIZE], mag.expand(len(on_gpu[i : i + BATCH_SIZE])).to("cuda"))

            def end_to_end(mode=mode) -> None:
                for _ in score_series(read_series(stack), magnification=5000.0, mode=mode, device="cuda"):
                    pass

            bare, ours = timed(network, seconds) * n, timed(end_to_end, seconds) * n
            print(
                f"scoring from disk, {mode:9s}: {ours:7.0f} frames/s end to end, {bare:7.0f} frames/s the network "
                f"alone on the same {len(crops)} crops (batches of {BATCH_SIZE}): ratio {ours / bare:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here")
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")

    batch = 256
    x = torch.rand(batch, 1, *CROP_SIZE, device=device)
    mag = normalize_magnification(5000.0).expand(batch).to(device)
    for layout in ("contiguous", "channels_last"):
        model = copy.deepcopy(load_model(args.weights, "cpu")).to(device)
        xs = x
        if layout == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            xs = x.contiguous(memory_format=torch.channels_last)
        for dtype in (None, torch.bfloat16):

            @torch.inference_mode()
            def run(model=model, xs=xs, dtype=dtype) -> None:
                with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                    model(xs, mag)

            rate = timed(run, args.seconds) * batch
            name = "bf16" if dtype else "fp32"
            print(f"scoring, network alone, {layout:13s} {name}: {rate:9.0f} images/s (320x240, batch {batch})")

    rng = np.random.default_rng(0)
    frames = [rng.random((768, 1024), dtype=np.float32) for _ in range(64)]
    model = load_model(args.weights, "cuda")

    def cli_path() -> None:
        for _ in score_frames(frames, 5000.0, model, "center", batch_size=64, device="cuda"):
            pass

    rate = timed(cli_path, args.seconds) * len(frames)
    print(f"scoring frames in RAM (score_frames, centre mode, 1024x768): {rate:9.0f} frames/s")
    from_disk(model, args.seconds)

    from napari_sem_focus.training.train import make_optimizer, recipe, score_loss

    config = recipe("gpu")
    net = copy.deepcopy(load_model(args.weights, "cpu")).to(device).to(memory_format=torch.channels_last).train()
    optimizer = make_optimizer(net, config)
    xb = torch.rand(config.batch_size, 1, *config.crop, device=device).contiguous(memory_format=torch.channels_last)
    mb = torch.rand(config.batch_size, device=device)
    sb = 10 * torch.rand(config.batch_size, device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logit = net.logit(xb, mb)
        loss = score_loss(logit.float(), sb, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    rate = timed(step, args.seconds) * config.batch_size
    print(f"training steps, synthetic batches (recipe gpu, batch {config.batch_size}, bf16): {rate:9.0f} images/s")


if __name__ == "__main__":
    main()
