"""The camera the observation model is told about: the horizontal field of view from a
camera's intrinsics (``sensor_msgs/CameraInfo``), given to a model that adapts to it (the
aligned model uses the camera geometry) and compared with the training camera of one that
does not (the DMN), so a different camera is said once instead of silently localizing worse.
"""
import math

from dmn_localizer.sim.mazes import HFOV_DEG as MAZES_HFOV_DEG
from dmn_localizer.sim.rooms import FOV_DEG as ROOMS_HFOV_DEG

HFOV_TOLERANCE_DEG = 2.0   # fields of view closer than this count as the same camera
SIMULATED_HFOV_DEG = {'mazes': MAZES_HFOV_DEG, 'rooms': ROOMS_HFOV_DEG}


def hfov_from_intrinsics(width, fx):
    """Horizontal field of view (degrees) of a pinhole camera ``width`` pixels wide with focal
    length ``fx`` (pixels); ValueError for a width or focal length that is not positive."""
    width, fx = float(width), float(fx)
    if not (math.isfinite(width) and math.isfinite(fx) and width > 0 and fx > 0):
        raise ValueError(f'camera_info: width {width:g} and fx {fx:g} must be positive')
    return math.degrees(2.0 * math.atan(width / (2.0 * fx)))


def training_hfov_deg(model):
    """The field of view (degrees) of the camera ``model`` was trained with: the aligned
    model's config, else the simulated domain of its training data (model card), else None."""
    if getattr(model, 'set_camera', None) is not None:
        return float(model.config.hfov_deg)
    data = ((getattr(model, 'card', None) or {}).get('metadata') or {}).get('train_data') or {}
    return SIMULATED_HFOV_DEG.get(data.get('domain') if isinstance(data, dict) else None)


def apply_camera(model, hfov_deg, override_deg=0.0):
    """Tell ``model`` the camera's field of view ``hfov_deg`` (from its intrinsics), unless
    ``override_deg`` > 0 (the user's ``camera_hfov_deg``) sets it. Returns
    ``(field of view the model uses or None, one-line warning or None)``."""
    adapts = getattr(model, 'set_camera', None) is not None
    if override_deg > 0:
        if adapts:
            model.set_camera(override_deg)
        if abs(override_deg - hfov_deg) > HFOV_TOLERANCE_DEG:
            return (override_deg if adapts else None,
                    f'camera_hfov_deg {override_deg:.1f} overrides the camera_info field of '
                    f'view ({hfov_deg:.1f} deg)')
        return override_deg if adapts else None, None
    if adapts:
        model.set_camera(hfov_deg)
        return hfov_deg, None
    trained = training_hfov_deg(model)
    if trained is not None and abs(trained - hfov_deg) > HFOV_TOLERANCE_DEG:
        return None, (f'the camera has a {hfov_deg:.1f} deg field of view, the '
                      f'{model.config.architecture} model was trained with {trained:.1f} deg '
                      'and does not adapt: expect worse localization (fine-tune on your '
                      'recordings, or use an aligned model)')
    return None, None
