"""`sem-focus train` under torchrun: 2 CPU processes (gloo) against 1 process, on the same tiny simulated data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_sem_focus.scoring.model import FocusScoreNet, ModelConfig
from napari_sem_focus.scoring.weights import load_model
from napari_sem_focus.training.data import SimulatedFrames
from napari_sem_focus.training.train import load_checkpoint, rmse

pytest.importorskip("torch.distributed.run")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("this torch has no gloo backend", allow_module_level=True)

FRAMES, STEPS = 32, 12
TRAIN = ["train", "--simulate", str(FRAMES), "--batch-size", "8", "--crop", "64", "48", "--device", "cpu"]
# BatchNorm statistics frozen: with them, the network's output for a frame does not depend on which other frames
# share its batch, so one process (batch 8) and two (4 each) compute the same gradients (SyncBatchNorm, which would
# give the same on the full batch, runs on GPUs only)
TRAIN += ["--lr", "5e-4", "--warmup-steps", "0", "--val", "--workers", "0", "--freeze-batchnorm", "--init", "default"]


def _run(tmp_path: Path, name: str, processes: int, *extra: str) -> subprocess.CompletedProcess:
    module = ["-m", "napari_sem_focus", *TRAIN, "--checkpoint", str(tmp_path / f"{name}.pt")]
    module += ["--out", str(tmp_path / f"{name}.safetensors"), *extra]
    if processes == 1:
        command = [sys.executable, *module]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        command += module
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _model(checkpoint: Path) -> tuple[FocusScoreNet, dict]:
    state = load_checkpoint(checkpoint)
    model = FocusScoreNet(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), state


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp_path = tmp_path_factory.mktemp("ddp")
    _run(tmp_path, "one", 1, "--steps", str(STEPS))
    two = _run(tmp_path, "two", 2, "--steps", str(STEPS))
    return tmp_path, two


def test_two_processes_train_like_one(runs: tuple[Path, subprocess.CompletedProcess]) -> None:
    tmp_path, two = runs
    one_model, one_state = _model(tmp_path / "one.pt")
    two_model, two_state = _model(tmp_path / "two.pt")  # the checkpoint loads in a plain (one-process) session
    assert one_state["step"] == two_state["step"] == STEPS
    start = load_model("default")  # the weights both runs started from

    # the loss fell: the training frames (small 64x48 crops, new to the default weights) are fitted better
    frames = SimulatedFrames("train", FRAMES, crop_size=(48, 64), train=False)
    images, mags, targets = (torch.stack(column) for column in zip(*(frames[i] for i in range(FRAMES)), strict=True))

    def fitted(model: FocusScoreNet) -> np.ndarray:
        with torch.no_grad():
            return model.eval()(images, mags).numpy()

    after_two, after_one = fitted(two_model), fitted(one_model)
    fit_two, fit_start = rmse(after_two, targets.numpy()), rmse(fitted(start), targets.numpy())
    print(f"fit: start {fit_start:.3f}, two processes {fit_two:.3f}, one {rmse(after_one, targets.numpy()):.3f}")
    assert fit_two < 0.9 * fit_start

    # two processes end near where one process ends: the same frames per step, gradients averaged
    moved = float((_parameters(one_model) - _parameters(start)).norm())
    apart = float((_parameters(two_model) - _parameters(one_model)).norm())
    print(f"parameters moved {moved:.3f}; two processes from one {apart:.3f}")
    assert apart < 0.1 * moved, (apart, moved)
    # and so do the scores: what one process changed, two processes changed alike (within 10 % of the change)
    change, differ = np.abs(after_one - fitted(start)), np.abs(after_two - after_one)
    print(f"scores changed by {change.mean():.3f} (max {change.max():.3f}), two from one {differ.mean():.3f} ", end="")
    print(f"(max {differ.max():.3f})")
    assert differ.mean() < 0.1 * change.mean() and differ.max() < 0.2 * change.max()

    # process 0 alone logs and writes: one setup line naming both processes, one weights file
    assert two.stderr.count("recipe fast:") == 1 and "2 processes" in two.stderr
    assert (tmp_path / "two.safetensors").is_file()


def test_two_processes_resume(runs: tuple[Path, subprocess.CompletedProcess]) -> None:
    tmp_path, _ = runs
    checkpoint = tmp_path / "resumed.pt"
    checkpoint.write_bytes((tmp_path / "two.pt").read_bytes())
    result = _run(tmp_path, "resumed", 2, "--steps", str(STEPS + 4), "--resume")
    _, state = _model(checkpoint)
    assert state["step"] == STEPS + 4
    assert f"step {STEPS + 4}/{STEPS + 4}" in result.stderr
