"""The network alone on this CPU in each runtime the speed issue names, side by side on the same crops: PyTorch
float32, PyTorch bf16 with channels_last (what scoring uses), ONNX Runtime float32 and OpenVINO float32 / bf16 (each
where it is installed: ``pip install onnxruntime onnx openvino`` — no dependency of the package; one would be adopted
only if it beat PyTorch here with scores within 0.01).

Prints the fastest and median ms a crop over alternate rounds, and each runtime's largest score difference from
PyTorch float32 on the same crops (batches of ``BATCH_SIZE`` crops of 320x240 from the tin-ball sample at 5,000x).
Run: python benchmarks/bench_runtimes.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_sem_focus.allocator import reuse_freed_memory
from napari_sem_focus.scoring.infer import BATCH_SIZE, frame_crops, inference_autocast
from napari_sem_focus.scoring.model import normalize_magnification
from napari_sem_focus.scoring.weights import load_model
from napari_sem_focus.simulate.samples import sample_series

Runner = Callable[[np.ndarray], np.ndarray]


def crops(n: int) -> np.ndarray:
    """``n`` structure-mode crops (float32, 320x240) of the tin-ball sample (its frames over and over)."""
    series = sample_series("tinball")
    out = [np.stack(frame_crops(series.frame(i), "structure")[0]) for i in range(len(series))]
    every = np.concatenate(out)
    return every[np.arange(n) % len(every)]


def torch_runner(bf16: bool) -> Runner:
    model = load_model(None)  # channels_last, as scoring loads it
    mag = normalize_magnification(5000.0)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), inference_autocast("cpu", bf16):
            x = torch.from_numpy(batch)[:, None].contiguous(memory_format=torch.channels_last)
            return model(x, mag.expand(len(batch))).float().numpy()

    return run


def export_onnx(tmp: Path) -> Path:
    """The scoring network (float32) as an ONNX file with a free batch size."""
    model = copy.deepcopy(load_model(None)).to(memory_format=torch.contiguous_format)  # not the cached model
    path = tmp / "focus.onnx"
    x = torch.zeros(BATCH_SIZE, 1, 240, 320)
    mag = torch.full((BATCH_SIZE,), float(normalize_magnification(5000.0)))
    torch.onnx.export(
        model,
        (x, mag),
        str(path),
        input_names=["x", "mag"],
        output_names=["score"],
        dynamic_axes={"x": {0: "batch"}, "mag": {0: "batch"}, "score": {0: "batch"}},
        dynamo=False,
        opset_version=17,
    )
    return path


def magnifications(batch: np.ndarray) -> np.ndarray:
    return np.full(len(batch), float(normalize_magnification(5000.0)), np.float32)


def onnx_runner(path: Path) -> Runner | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": batch[:, None], "mag": magnifications(batch)})[0].reshape(-1)

    return run


def openvino_runners(path: Path) -> dict[str, Runner]:
    """OpenVINO on the CPU, float32 and bf16 (its inference-precision hint), when installed."""
    try:
        import openvino
    except ImportError:
        return {}
    core = openvino.Core()
    network = core.read_model(str(path))
    runners = {}
    for name, precision in (("float32", "f32"), ("bf16", "bf16")):
        config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        compiled = core.compile_model(network, "CPU", config)

        def run(batch: np.ndarray, compiled: Any = compiled) -> np.ndarray:
            return np.asarray(compiled([batch[:, None], magnifications(batch)])[0]).reshape(-1)

        runners[f"openvino {name}"] = run
    return runners


def timed(run: Runner, data: np.ndarray) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    scores = np.concatenate([run(data[i : i + BATCH_SIZE]) for i in range(0, len(data), BATCH_SIZE)])
    return time.perf_counter() - start, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--crops", type=int, default=160)
    args = parser.parse_args()
    reuse_freed_memory()  # as every sem-focus command runs (napari_sem_focus.allocator)
    data = crops(args.crops)
    with tempfile.TemporaryDirectory() as name:
        runners = {"torch float32": torch_runner(False), "torch bf16 + channels_last": torch_runner(True)}
        path = export_onnx(Path(name))
        onnx = onnx_runner(path)
        if onnx is not None:
            runners["onnxruntime float32"] = onnx
        runners |= openvino_runners(path)
        for run in runners.values():
            timed(run, data[:BATCH_SIZE])  # warm-up
        times: dict[str, list[float]] = {k: [] for k in runners}
        scores: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for key, run in runners.items():
                seconds, scores[key] = timed(run, data)
                times[key].append(seconds / len(data) * 1e3)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(data)} crops in batches of {BATCH_SIZE}")
    if onnx is None or not any(k.startswith("openvino") for k in runners):
        print("not installed (each is measured when it is): pip install onnxruntime onnx openvino")
    for key in runners:
        diffs = [
            float(np.abs(scores[key] - scores[ref]).max()) for ref in ("torch float32", "torch bf16 + channels_last")
        ]
        print(
            f"{key:28s} fastest {min(times[key]):6.2f} ms a crop, median {np.median(times[key]):6.2f}; "
            f"max score difference from torch float32 {diffs[0]:.4f}, from torch bf16 (scoring) {diffs[1]:.4f}"
        )


if __name__ == "__main__":
    main()
