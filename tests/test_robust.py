"""A student that does not forget: WiSE-FT interpolation with its zero-shot start, tensor by tensor."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ranker.errors import RankerError  # noqa: E402
from ranker.models.config import TwinBertConfig  # noqa: E402
from ranker.models.twinbert import TwinBert  # noqa: E402
from ranker.train.robust import interpolate, save_interpolated, zero_shot_start  # noqa: E402


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A 1-layer student whose every tensor moved away from its start (as distillation moves it)."""
    torch.manual_seed(0)
    model = TwinBert(TwinBertConfig(num_layers=1), device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return TwinBert.load(model.save(tmp_path_factory.mktemp("robust") / "student"), device="cpu")


def test_the_ends_are_the_start_and_the_student_and_the_middle_is_the_mean(distilled):
    start = zero_shot_start(distilled)
    assert interpolate(distilled, 0.0).fingerprint() == start.fingerprint()
    assert interpolate(distilled, 1.0).fingerprint() == distilled.fingerprint()
    half = interpolate(distilled, 0.5).state_dict()
    tuned, base = distilled.state_dict(), start.state_dict()
    for name in ("doc_tower.encoder.encoder.layer.0.attention.self.query.weight", "doc_tower.pooling.score.weight"):
        if name in half:
            assert torch.allclose(half[name], (tuned[name] + base[name]) / 2, atol=1e-6)
    assert all(torch.allclose(half[n], (tuned[n] + base[n]) / 2, atol=1e-6) for n in half)


def test_alpha_outside_the_unit_interval_and_other_architectures_are_refused(distilled):
    for alpha in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(RankerError, match="alpha must lie in"):
            interpolate(distilled, alpha)
    other = TwinBert(TwinBertConfig(num_layers=2), device="cpu")
    with pytest.raises(RankerError, match="differ in architecture"):
        interpolate(distilled, 0.5, other)


def test_the_saved_model_records_its_recipe_and_its_query_cap(distilled, tmp_path):
    out = save_interpolated(distilled.path, 0.25, tmp_path / "wise", query_max_length=64)
    loaded = TwinBert.load(out, device="cpu")
    assert loaded.config.query_max_length == 64 and loaded.config.doc_max_length == distilled.config.doc_max_length
    assert loaded.fingerprint() == interpolate(distilled, 0.25).fingerprint()  # the query cap is not the doc side's
    recipe = json.loads((out / "training.json").read_text())
    assert recipe["recipe"] == "wise-ft" and recipe["alpha"] == 0.25 and recipe["query_max_length"] == 64
    with pytest.raises(RankerError, match="query_max_length must lie"):
        save_interpolated(distilled.path, 0.25, tmp_path / "bad", query_max_length=100_000)
    assert not (tmp_path / "bad").exists()
