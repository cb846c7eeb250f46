"""The camera's intrinsics reach the observation model: an aligned model is told the field of
view, a DMN trained with another camera is reported once, the user's camera_hfov_deg wins."""
import pytest
import torch

from dmn_localizer.localization.camera import (apply_camera, hfov_from_intrinsics,
                                               training_hfov_deg)
from dmn_localizer.model import build_model, DMNConfig, load_model, save_model


def test_field_of_view_from_intrinsics():
    assert hfov_from_intrinsics(64, 32) == pytest.approx(90.0)
    assert hfov_from_intrinsics(640, 554.3) == pytest.approx(60.0, abs=0.01)
    for width, fx in ((0, 10), (64, 0), (64, float('nan'))):
        with pytest.raises(ValueError, match='camera_info'):
            hfov_from_intrinsics(width, fx)


def test_aligned_model_takes_the_camera_and_a_dmn_says_it_differs(tmp_path):
    torch.manual_seed(0)
    aligned = build_model(DMNConfig(architecture='aligned', hfov_deg=90.0)).eval()
    ci, cp = torch.rand(1, 3, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 3) * 10
    qi, parts = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 8, 3) * 10
    with torch.no_grad():
        before = aligned(ci, cp, qi, parts)
        assert apply_camera(aligned, 60.0) == (60.0, None)
        assert aligned.hfov_deg == 60.0 and training_hfov_deg(aligned) == 90.0
        assert not torch.allclose(aligned(ci, cp, qi, parts), before)
    # the user's parameter overrides camera_info, and the difference is said
    used, warning = apply_camera(aligned, 60.0, override_deg=75.0)
    assert used == 75.0 and aligned.hfov_deg == 75.0 and 'overrides' in warning

    save_model(build_model(DMNConfig()), tmp_path / 'dmn',
               metadata={'train_data': {'domain': 'rooms'}})
    dmn = load_model(tmp_path / 'dmn')
    assert training_hfov_deg(dmn) == 75.0
    used, warning = apply_camera(dmn, 90.0)
    assert used is None and 'trained with 75.0 deg' in warning
    assert apply_camera(dmn, 75.5) == (None, None)   # within tolerance: the same camera
