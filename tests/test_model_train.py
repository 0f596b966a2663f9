"""Model, training loop, checkpoints, fine-tuning, weights files: small and fast (tiny crops, few steps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sem_focus.errors import CancelledError, SemFocusError, WeightsError
from napari_sem_focus.scoring.model import build_focus_net, check_magnification, normalize_magnification
from napari_sem_focus.scoring.weights import load_model, read_weights_info, save_weights
from napari_sem_focus.training.train import (
    drive,
    iter_fine_tune,
    load_checkpoint,
    model_from_checkpoint,
    predict,
    recipe,
    rmse,
    score_loss,
    train,
)

from .conftest import texture


def test_output_shape_range_and_one_channel_stem():
    net = build_focus_net().eval()
    assert net.trunk.conv1.in_channels == 1
    out = net(torch.rand(3, 1, 64, 96), normalize_magnification(torch.tensor([500.0, 5000.0, 1e5])))
    assert out.shape == (3,) and bool(((out >= 0) & (out <= 10)).all())


def test_magnification_changes_output_and_ablation_ignores_it():
    torch.manual_seed(0)
    net = build_focus_net().eval()
    x = torch.rand(1, 1, 64, 64).repeat(2, 1, 1, 1)
    out = net(x, normalize_magnification(torch.tensor([500.0, 10000.0])))
    assert abs(float(out[0] - out[1])) > 1e-4
    plain = build_focus_net(use_magnification=False).eval()
    assert plain(x).shape == (2,)
    with pytest.raises(ValueError, match="magnification"):
        net(x)


def test_magnification_normalisation_anchors_and_warning():
    assert float(normalize_magnification(500.0)) == pytest.approx(0.0)
    assert float(normalize_magnification(10_000.0)) == pytest.approx(1.0)
    assert float(normalize_magnification(1e9)) == pytest.approx(3.0)  # clamped
    with pytest.warns(UserWarning, match="outside the trained range"):
        assert check_magnification(50.0) is not None
    assert check_magnification(5000.0) is None


class _Tiny(torch.utils.data.Dataset):
    """8 frames: sharp textures labelled 9, blurred ones labelled 2."""

    def __init__(self):
        self.items = []
        for i in range(8):
            sharp = i % 2 == 0
            img = texture((64, 64), seed=i, blur_px=0.0 if sharp else 3.0)
            self.items.append(
                (torch.from_numpy(img)[None], normalize_magnification(2000.0), torch.tensor(9.0 if sharp else 2.0))
            )

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _config(**kw):
    base = dict(
        max_steps=2,
        batch_size=4,
        crop=(64, 64),
        warmup_steps=0,
        amp=False,
        channels_last=False,
        eval_every=1000,
        checkpoint_every=1,
        log_every=1,
        device="cpu",
    )
    return recipe("fast", **(base | kw))


def test_a_few_steps_lower_the_loss():
    data = _Tiny()
    torch.manual_seed(0)
    net = build_focus_net()
    before = rmse(*predict(net, data)[:2])
    result = train(_config(max_steps=25, lr=1e-3), data, init_model=net)
    after = rmse(*predict(result.model, data)[:2])
    assert after < before


def test_a_step_in_parts_gives_the_whole_batch_step():
    """Out of GPU memory a step runs in parts whose gradients add up to the batch's (BatchNorm frozen here, so the
    parts see the same statistics): the weights after the step are the same."""
    from napari_sem_focus.training.train import _Logit, _OptimizerStep

    images, mags, scores = (torch.stack(column) for column in zip(*_Tiny().items, strict=True))
    after = []
    for parts in (1, 4):
        torch.manual_seed(0)
        net = build_focus_net().eval()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        step = _OptimizerStep(_Logit(net), optimizer, None, torch.device("cpu"), amp=False, loss="bce")
        step.parts = parts
        loss, logit = step(images, mags, scores)
        assert logit.shape == (8,) and torch.isfinite(loss)
        after.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert not torch.equal(after[0], torch.cat([p.flatten() for p in build_focus_net().parameters()]))
    assert torch.allclose(after[0], after[1], atol=1e-5)


def test_training_out_of_memory_splits_the_batch_then_says_what_to_do(monkeypatch):
    from napari_sem_focus.training.train import _Logit

    forward, seen = _Logit.forward, []

    def small_device(self, image, mag_norm):  # a device on which at most `fits` images fit
        if len(image) > fits:
            raise torch.OutOfMemoryError("CUDA out of memory (pretend)")
        seen.append(len(image))
        return forward(self, image, mag_norm)

    monkeypatch.setattr(_Logit, "forward", small_device)
    fits = 2
    with pytest.warns(UserWarning, match="each step now runs in 2 parts"):
        result = train(_config(max_steps=3, checkpoint_every=1000), _Tiny())
    assert result.step == 3 and set(seen) == {2} and np.isfinite(result.history[-1].loss)
    fits = 0
    with pytest.warns(UserWarning), pytest.raises(SemFocusError, match="lower --batch-size"):
        train(_config(max_steps=1, checkpoint_every=1000), _Tiny())


def test_when_not_one_image_fits_training_moves_to_the_cpu():
    from napari_sem_focus.training.train import _Logit, _OptimizerStep

    images, mags, scores = (torch.stack(column) for column in zip(*_Tiny().items, strict=True))
    net = build_focus_net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    step = _OptimizerStep(_Logit(net), optimizer, None, torch.device("cpu"), amp=False, loss="bce")
    step(images[:2], mags[:2], scores[:2])  # a first step: the optimiser now has state to move
    forward = _Logit.forward

    def full_gpu(module, image, mag_norm):  # nothing fits while the step is on the (pretend) GPU
        if step.device.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory (pretend)")
        return forward(module, image, mag_norm)

    step.device = torch.device("meta")  # stands for a GPU here: only its name is used before the move
    with pytest.MonkeyPatch.context() as patch, pytest.warns(UserWarning, match="training goes on on the CPU"):
        patch.setattr(_Logit, "forward", full_gpu)
        loss, logit = step(images[:2], mags[:2], scores[:2])
    assert step.device.type == "cpu" and step.parts == 1 and torch.isfinite(loss) and logit.shape == (2,)
    assert all(s["momentum_buffer"].device.type == "cpu" for s in optimizer.state.values())


def test_bce_loss_keeps_pulling_saturated_outputs_and_is_zero_at_a_perfect_fit():
    target = torch.tensor([10.0, 0.0, 4.0])
    grads = {}
    for kind in ("mse", "bce"):
        logit = torch.tensor([-8.0, 8.0, 0.0], requires_grad=True)  # scores ~0.003 and ~9.997: both wrong
        score_loss(logit, target, kind).backward()
        grads[kind] = logit.grad.abs()[:2]
    assert (grads["mse"] < 0.05).all() and (grads["bce"] > 0.3).all()
    perfect = torch.logit(target[2:] / 10)
    assert score_loss(perfect, target[2:], "bce").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(SemFocusError, match="unknown loss"):
        score_loss(perfect, target[2:], "l1")


def test_a_few_bce_steps_lower_the_loss():
    data = _Tiny()
    torch.manual_seed(0)
    net = build_focus_net()
    before = rmse(*predict(net, data)[:2])
    result = train(_config(max_steps=25, lr=1e-3, loss="bce", log_every=1), data, init_model=net)
    assert rmse(*predict(result.model, data)[:2]) < before
    # the progress reports the training RMSE in score units, whatever the loss optimised
    rmses = [e.train_rmse for e in result.history]
    assert len(rmses) == 25 and all(0 < r < 10 for r in rmses)
    assert rmses[-1] < rmses[0]


def test_checkpoint_round_trip_and_resume(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    first = train(_config(max_steps=2), _Tiny(), checkpoint=ckpt)
    state = load_checkpoint(ckpt)  # weights_only=True inside
    assert state["step"] == 2 and state["config"]["max_steps"] == 2
    assert torch.equal(state["model"]["head.2.weight"], first.model.state_dict()["head.2.weight"])
    resumed = train(_config(max_steps=4), _Tiny(), checkpoint=ckpt, resume=True)
    assert resumed.step == 4
    assert load_checkpoint(ckpt)["step"] == 4


def test_weight_average_is_what_the_run_returns_and_survives_a_resume(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    start = build_focus_net()
    first = train(_config(max_steps=3, ema=0.5, lr=1e-3), _Tiny(), checkpoint=ckpt, init_model=start)
    key = "head.2.weight"
    averaged, last = first.model.state_dict()[key], first.last_model.state_dict()[key]
    assert not torch.equal(averaged, last)  # the average lags the last step
    state = load_checkpoint(ckpt)
    assert torch.equal(state["ema"]["module." + key], averaged) and torch.equal(state["model"][key], last)
    assert torch.equal(model_from_checkpoint(state, averaged=True).state_dict()[key], averaged)
    assert torch.equal(model_from_checkpoint(state).state_dict()[key], last)
    # decay 0.5 over steps w1, w2, w3 (the first update copies w1): 0.25 w1 + 0.25 w2 + 0.5 w3, which has moved
    # from the start, but less far than the last step
    assert 0 < float((averaged - start.state_dict()[key]).norm()) < float((last - start.state_dict()[key]).norm())
    resumed = train(_config(max_steps=4, ema=0.5, lr=1e-3), _Tiny(), checkpoint=ckpt, resume=True)
    n_averaged = load_checkpoint(ckpt)["ema"]["n_averaged"]
    assert resumed.step == 4 and int(n_averaged) == 4  # the average went on from the checkpoint's, not afresh
    plain = train(_config(max_steps=2), _Tiny())
    assert plain.last_model is None


def test_cancel_keeps_previous_model_and_weights_file(tmp_path):
    net = build_focus_net()
    path = save_weights(net, tmp_path / "current.safetensors")
    before_bytes = path.read_bytes()
    before_state = {k: v.clone() for k, v in net.state_dict().items()}
    samples = [(texture((80, 80), seed=i), 2000.0, float(i % 10)) for i in range(12)]
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(CancelledError):
        drive(iter_fine_tune(net, samples, 50, (64, 64), 4, device="cpu", should_stop=stop))
    assert all(torch.equal(before_state[k], v) for k, v in net.state_dict().items())
    assert sorted(tmp_path.iterdir()) == [path] and path.read_bytes() == before_bytes  # nothing written beside it


def test_fine_tune_reports_before_and_after(tmp_path):
    samples = [
        (texture((80, 80), seed=i, blur_px=0.0 if i % 2 else 3.0), 2000.0, 9.0 if i % 2 else 1.0) for i in range(10)
    ]
    net = build_focus_net()
    result = drive(iter_fine_tune(net, samples, steps=3, crop_size=(64, 64), batch_size=4, lr=1e-3, device="cpu"))
    assert result.metrics["n_val"] == 2 and result.metrics["n_train"] == 8
    assert np.isfinite(result.metrics["rmse_before"]) and np.isfinite(result.metrics["rmse_after"])
    # a few frames in batches of 4 must not overwrite the BatchNorm statistics learnt on the big training set
    old, new = net.state_dict(), result.model.state_dict()
    stats = [k for k in old if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(old[k], new[k]) for k in stats)
    assert not torch.equal(old["head.0.weight"], new["head.0.weight"])
    assert result.step == 3


def test_safetensors_round_trip_fp16_and_facts(tmp_path):
    net = build_focus_net().eval()
    path = save_weights(net, tmp_path / "m.safetensors", {"val_rmse": 0.3})
    info = read_weights_info(path)
    assert info.model_config["arch"] == "resnet18" and info.facts["val_rmse"] == 0.3
    loaded = load_model(path)
    assert load_model(path) is loaded  # cached
    x, m = torch.rand(2, 1, 64, 64), normalize_magnification(torch.tensor([1000.0, 2000.0]))
    with torch.inference_mode():
        assert torch.allclose(net(x, m), loaded(x, m), atol=0.05)


def test_bad_weights_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(WeightsError):
        load_model(bad)


def test_data_loader_workers_after_validation_frames_were_made():
    """Training with a data-loader worker finishes after the main process has made (and kept) the validation
    frames. With forked workers this hung: the child touched OpenCV's thread pool that the parent had used."""
    import threading

    from napari_sem_focus.training.data import SimulatedFrames

    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = train(
                _config(max_steps=2, num_workers=1, checkpoint_every=100),
                SimulatedFrames("train", 16, crop_size=(64, 64)),
                SimulatedFrames("val", 4),
            )
        except Exception as err:  # reported below
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=180)
    assert not thread.is_alive(), "training with a data-loader worker hung"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.step == 2 and result.metrics["val_rmse"] > 0


def test_time_budget_sets_the_learning_rate_schedule():
    """With max_minutes the cosine decay runs over the time budget: at the budget's end the rate is at its floor,
    even though far fewer steps than planned were made."""
    from napari_sem_focus.training.train import _lr_factor

    config = recipe("gpu", warmup_steps=10, max_minutes=1.0)
    assert _lr_factor(5, 10_000, config, 1.0) == pytest.approx(0.6)  # warm-up
    assert _lr_factor(100, 10_000, config, 0.0) > 0.99
    assert _lr_factor(100, 10_000, config, 30.0) == pytest.approx(0.51, abs=0.01)  # half the budget
    assert _lr_factor(100, 10_000, config, 60.0) == pytest.approx(0.02)
    unlimited = recipe("gpu", warmup_steps=10)
    assert _lr_factor(100, 10_000, unlimited, 60.0) > 0.99  # no budget: by steps only


def test_gpu_recipe_and_setup_line():
    from napari_sem_focus.training.train import describe_setup

    config = recipe("gpu")
    assert (config.batch_size, config.crop, config.device, config.amp) == (128, (240, 320), "cuda", True)
    assert config.num_workers >= 1
    line = describe_setup(recipe("gpu", device="cpu", num_workers=3))
    assert "recipe gpu: cpu" in line and "bfloat16" in line and "3 data workers" in line
    with pytest.raises(SemFocusError, match="unknown recipe"):
        recipe("tpu")


class _Payload:
    """A pickle that runs code when loaded (what a booby-trapped checkpoint or weights file would hold)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_checkpoints_and_weights_with_code_in_them_are_refused(tmp_path):
    """Untrusted files: a checkpoint is loaded with weights_only=True and weights only as safetensors, so a pickle
    that would run code is refused with a message and its code never runs."""
    marker = tmp_path / "code_ran"
    trap = tmp_path / "trap.pt"
    torch.save({"model": _Payload(marker), "step": 1}, trap)
    with pytest.raises(SemFocusError, match="cannot load checkpoint"):
        load_checkpoint(trap)
    assert not marker.exists()
    with pytest.raises(WeightsError, match="cannot read weights"):
        load_model(trap)
    assert not marker.exists()


def test_echo_buffer_draws_from_recent_batches_with_labels_kept():
    """Data echoing: ``echo`` batches per fresh batch, each a draw from the last ``depth`` fresh batches, every frame
    flipped or not but never separated from its label; echo 1 passes the fresh batch through untouched."""
    from napari_sem_focus.training.train import EchoBuffer

    generator = torch.Generator().manual_seed(0)
    originals: dict[int, torch.Tensor] = {}

    def fresh(first: int) -> tuple[torch.Tensor, ...]:
        ids = torch.arange(first, first + 4)
        images = torch.rand(4, 1, 6, 8, generator=generator)
        originals.update({int(i): image for i, image in zip(ids, images, strict=True)})
        return images, ids.float() / 100, ids.float()

    plain = EchoBuffer(1)
    batch = fresh(0)
    assert [tuple(b) for b in plain.batches(*batch)] == [batch]

    echoes = EchoBuffer(3, depth=2, seed=1)
    seen, flipped = set(), 0
    for first in (0, 4, 8):
        draws = list(echoes.batches(*fresh(first)))
        assert len(draws) == 3
        for images, mag, score in draws:
            assert images.shape == (4, 1, 6, 8)
            assert torch.allclose(mag, score / 100)  # the magnification travels with its frame
            for image, i in zip(images, score.long().tolist(), strict=True):
                assert first - 4 <= i < first + 4  # only the last 2 fresh batches
                orientations = [originals[i], originals[i].flip(-1), originals[i].flip(-2), originals[i].flip(-1, -2)]
                match = [k for k, o in enumerate(orientations) if torch.equal(image, o)]
                assert match, "a drawn image is its own frame, perhaps flipped"
                flipped += match[0] > 0
                seen.add(i)
    assert len(seen) >= 8 and max(seen) >= 8 and flipped > 0  # draws spread over the pool, new frames included
    # training moved off the GPU (out of memory): batches left on the old device leave the pool
    echoes._pool = [tuple(t.to("meta") for t in batch) for batch in echoes._pool]
    assert all(images.device.type == "cpu" for images, _, _ in echoes.batches(*fresh(12)))
    assert len(echoes._pool) == 1
    with pytest.raises(SemFocusError, match="at least 1"):
        EchoBuffer(0)


def test_echoed_training_takes_echo_steps_per_batch_and_lowers_the_loss():
    data = _Tiny()
    torch.manual_seed(0)
    net = build_focus_net()
    before = rmse(*predict(net, data)[:2])
    result = train(_config(max_steps=24, lr=1e-3, echo=3, log_every=3), data, init_model=net)
    assert result.step == 24 and [e.step for e in result.history][:2] == [3, 6]
    assert rmse(*predict(result.model, data)[:2]) < before


def test_physics_targets_of_simulated_frames_and_nan_where_unknown():
    from napari_sem_focus.training.data import AUX_TARGETS, SimulatedFrames, physics_targets

    frames = SimulatedFrames("train", 40, shape=(48, 64), aux=True)
    labels = torch.stack([frames[i][2] for i in range(len(frames))])
    assert labels.shape == (40, 1 + len(AUX_TARGETS))
    plain = SimulatedFrames("train", 3, shape=(48, 64))
    assert torch.equal(plain[2][2], labels[2, 0])  # the score itself is unchanged
    # a blurrier probe, a higher dose, an elongated probe: each target moves its own way only
    base = physics_targets(2.0, 2.0, 100.0)
    assert physics_targets(8.0, 8.0, 100.0)[0] == pytest.approx(base[0] + 0.5)  # 4x the diameter: 2 octaves / 4
    assert physics_targets(2.0, 2.0, 10_000.0)[1] == pytest.approx(base[1] + 1.0)
    assert base[2] == 0.0 and physics_targets(4.0, 1.0, 100.0)[2] > 0.5
    blank = SimulatedFrames("blank", 3, shape=(48, 64), train=True, aux=True)[0][2]
    assert torch.isnan(blank[1:]).all() and 0.0 <= float(blank[0]) <= 1.0  # a blank frame: score only


def test_auxiliary_targets_train_a_head_that_is_kept_in_checkpoints_not_in_weights(tmp_path):
    from napari_sem_focus.training.data import with_targets
    from napari_sem_focus.training.train import training_loss

    # the auxiliary loss counts only known targets, weighted
    logit, aux = torch.zeros(2), torch.zeros(2, 3)
    labels = torch.stack([with_targets(5.0, [1.0, 1.0, 1.0], True), with_targets(5.0, None, True)])
    plain, _ = training_loss(logit, labels, "mse")
    weighted, _ = training_loss((logit, aux), labels, "mse", aux_weight=0.5)
    assert float(plain) == pytest.approx(0.0) and float(weighted) == pytest.approx(0.5 * 1.0)

    class _WithTargets(_Tiny):
        def __getitem__(self, i):
            image, mag, score = self.items[i]
            blur = [0.0, 0.0, 0.0] if i % 2 == 0 else [0.6, 0.0, 0.0]
            return image, mag, with_targets(float(score), blur, True)

    ckpt = tmp_path / "ckpt.pt"
    result = train(_config(max_steps=3, aux_weight=0.3, lr=1e-3), _WithTargets(), checkpoint=ckpt)
    state = load_checkpoint(ckpt)
    assert state["aux_head"]["weight"].shape == (3, 512)  # the training-only head, for resuming
    assert set(state["model"]) == set(build_focus_net().state_dict())  # the scoring network is the paper's
    resumed = train(_config(max_steps=5, aux_weight=0.3, lr=1e-3), _WithTargets(), checkpoint=ckpt, resume=True)
    head_after = load_checkpoint(ckpt)["aux_head"]["weight"]
    assert resumed.step == 5 and not torch.equal(head_after, state["aux_head"]["weight"])
    path = save_weights(result.model, tmp_path / "aux.safetensors")
    assert set(load_model(path).state_dict()) == set(build_focus_net().state_dict())


def test_progressive_crops_grow_to_the_whole_crop():
    from napari_sem_focus.training.train import progressive_crop

    images = torch.arange(2 * 144 * 192, dtype=torch.float32).reshape(2, 1, 144, 192)
    generator = torch.Generator().manual_seed(0)
    shapes = [tuple(progressive_crop(images, p, generator).shape[-2:]) for p in (0.0, 0.39, 0.4, 0.69, 0.7, 1.0)]
    assert shapes == [(72, 96), (72, 96), (108, 144), (108, 144), (144, 192), (144, 192)]
    window = progressive_crop(images, 0.1, generator)
    top, left = divmod(int(window[0, 0, 0, 0]), 192)
    assert torch.equal(window, images[..., top : top + 72, left : left + 96])  # a window of the frames, same pixels
    result = train(_config(max_steps=4, progressive=True, lr=1e-3), _Tiny())  # small crops early: still trains
    assert result.step == 4


def test_semireal_frames_carry_physics_targets_beside_the_same_score(tmp_path):
    import tifffile

    from napari_sem_focus.training.data import AUX_TARGETS, SemiRealFrames

    source = tmp_path / "in_focus.tif"
    tifffile.imwrite(source, (texture((200, 260), seed=3) * 255).astype(np.uint8))
    plain = SemiRealFrames([source], length=4, crop_size=(48, 64), pixel_nm=5.0)
    with_aux = SemiRealFrames([source], length=4, crop_size=(48, 64), pixel_nm=5.0, aux=True)
    for i in range(4):
        image, _mag, labels = with_aux[i]
        assert labels.shape == (1 + len(AUX_TARGETS),) and torch.isfinite(labels).all()
        assert torch.equal(labels[0], plain[i][2]) and torch.equal(image, plain[i][0])  # same frame, same score
