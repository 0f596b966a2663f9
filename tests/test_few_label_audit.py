"""The few-label audit (benchmarks/few_label_audit.py): which keep-or-change decisions the done-criterion forces, and
whether a threshold on the labelled frames' evidence could make them all."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "few_label_audit.py"
_SPEC = importlib.util.spec_from_file_location("few_label_audit", _PATH)
few_label_audit = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(few_label_audit)


def _draw(row: str, k: int, before: float, line: float, misfit: float) -> dict:
    evidence = dict.fromkeys(("misfit", "line gain", "F", "cv gain", "cv t", "order"), misfit)
    return {"set": "sim", "user": row, "n": 5, "draw": k, "before": before, "line": line, "isotonic": 9.0,
            "evidence": evidence}  # fmt: skip


def test_a_draw_where_the_line_is_far_better_must_change_and_one_where_it_is_far_worse_must_keep():
    # a lab on another scale: the line halves the error in every draw; keeping the model in any one fails the row
    other_scale = [_draw("stricter", k, 1.5, 0.6, 1.4) for k in range(3)]
    # a lab on our scale: the line doubles the error in draw 0 and ties elsewhere
    our_scale = [_draw("ours", 0, 0.6, 1.2, 1.0)] + [_draw("ours", k, 0.6, 0.6, 0.3) for k in (1, 2)]
    assert few_label_audit.forced(other_scale) == ([0, 1, 2], [])
    assert few_label_audit.forced(our_scale) == ([], [0])


def test_the_audit_says_no_threshold_works_when_a_must_keep_draw_shows_more_evidence():
    other_scale = [_draw("stricter", k, 1.5, 0.6, 1.4) for k in range(3)]
    our_scale = [_draw("ours", 0, 0.6, 1.2, 1.0)] + [_draw("ours", k, 0.6, 0.6, 0.3) for k in (1, 2)]
    separable = "\n".join(few_label_audit.audit(other_scale + our_scale))
    assert "3 draws must change the scale, 1 must keep the model" in separable
    assert "no threshold works" not in separable and "separable (any t in (1.00, 1.40]" in separable
    assert "dominated pairs (the must-keep draw shows more of every evidence): 0" in separable

    our_scale[0]["evidence"] = dict.fromkeys(our_scale[0]["evidence"], 2.0)  # the noisy draw looks like a shift
    lines = few_label_audit.audit(other_scale + our_scale)
    assert sum("no threshold works" in line for line in lines) == 6
    assert "must keep sim/ours draw 0 at 2.00" in lines[-1]
    assert "dominated pairs (the must-keep draw shows more of every evidence): 3" in lines[1]
    assert "must change sim/stricter draw 0, must keep sim/ours draw 0" in lines[2]


def test_labels_a_point_below_our_scale_show_more_evidence_than_labels_on_it():
    rng = np.random.default_rng(3)
    scores = np.array([1.0, 3.0, 5.0, 7.0, 9.0])
    on_ours = few_label_audit.evidence(scores, scores + rng.normal(0.0, 0.3, 5))
    a_point_lower = few_label_audit.evidence(scores, scores + rng.normal(0.0, 0.3, 5) - 1.0)
    assert on_ours["misfit"] < 0.6 < 0.9 < a_point_lower["misfit"]
    assert a_point_lower["line gain"] > on_ours["line gain"] + 0.5
    assert a_point_lower["cv gain"] > 0.3 > on_ours["cv gain"]


def test_the_audit_reads_the_evidence_from_the_labelled_pairs_a_benchmark_run_saved():
    scores = [1.0, 3.0, 5.0, 7.0, 9.0]
    saved = {"set": "sim", "user": "ours", "n": 5, "draw": 0, "before": 0.6, "line": 1.2, "isotonic": 1.5}
    as_saved = saved | {"scores": scores, "labels": [1.5, 2.5, 5.5, 6.0, 9.5]}
    read = saved | {"evidence": few_label_audit.evidence(np.array(scores), np.array(as_saved["labels"]))}
    other = [_draw("stricter", k, 1.5, 0.6, 0.1) for k in range(3)]
    assert few_label_audit.audit([*other, as_saved]) == few_label_audit.audit([*other, read])
    assert "1 must keep the model" in few_label_audit.audit([*other, as_saved])[0]
