"""The 2.5D column warp: where a view's image columns land in another camera's image.

In a world of vertical surfaces seen by a level pinhole camera, one image column is one ray in
the ground plane and its depth is one number. Column ``j`` of ``J`` (left to right) of a camera
with horizontal field of view ``hfov`` looks along ``tan(a_j) = t_half * (1 - 2 (j + 0.5) / J)``
(``t_half = tan(hfov / 2)``, ``a_j`` counter-clockwise from the optical axis, REP-103), so the
point it sees at depth ``d`` (along the optical axis) is ``(d, d tan(a_j))`` in the camera's
(forward, left) frame. A point ``(f, l)`` in another camera's frame projects to its continuous
column ``u = (1 - (l / f) / t_half) * J / 2 - 0.5``; it is visible there when ``f > 0`` and
``-0.5 <= u <= J - 0.5``.

Pure torch; used by :class:`~dmn_localizer.model.aligned.AlignedModel`, by the training sampler
(overlap of two views from their true depths) and by the tests.
"""
import math

import torch

from dmn_localizer.geometry import relative

MIN_FORWARD_M = 0.05
"""A point closer than this in front of a camera (or behind it) does not project."""


def column_tangents(columns, hfov_deg, device=None, dtype=torch.float32):
    """``tan`` of each column's ray angle from the optical axis, left positive: (J,)."""
    t_half = math.tan(math.radians(hfov_deg) / 2.0)
    j = torch.arange(columns, device=device, dtype=dtype)
    return t_half * (1.0 - 2.0 * (j + 0.5) / columns)


def warp_columns(source_in_target, depth, columns, hfov_deg):
    """Project a source view's columns into a target camera.

    source_in_target: (..., 3) pose of the source camera in the target camera's frame
    (:func:`dmn_localizer.geometry.relative` ``(target, source)``); depth: (..., J) depth of
    each source column (metres along the source's optical axis), broadcastable against the
    pose's leading dims. Returns ``u`` (..., J) continuous target column of each source
    column's point, ``forward`` (..., J) that point's depth in the target camera, and ``valid``
    (..., J) bool: in front of the target and inside its field of view.
    """
    t = column_tangents(columns, hfov_deg, depth.device, depth.dtype)
    pf, pl = depth, depth * t
    x, y, a = (source_in_target[..., i, None] for i in range(3))
    c, s = torch.cos(a), torch.sin(a)
    f = x + c * pf - s * pl
    lft = y + s * pf + c * pl
    front = f > MIN_FORWARD_M
    t_half = math.tan(math.radians(hfov_deg) / 2.0)
    u = (1.0 - lft / f.clamp_min(MIN_FORWARD_M) / t_half) * (columns / 2.0) - 0.5
    valid = front & (u >= -0.5) & (u <= columns - 0.5)
    return u, f, valid


def sample_columns(values, u):
    """Linear interpolation of ``values`` (..., Jt) at continuous columns ``u`` (..., Js)
    (clamped to the image): (..., Js). ``values`` broadcasts against ``u``'s leading dims."""
    jt = values.shape[-1]
    u = u.clamp(0.0, jt - 1.0)
    i0 = u.floor().long().clamp(max=jt - 2) if jt > 1 else u.floor().long()
    a = u - i0.to(u.dtype)
    shape = torch.broadcast_shapes(values.shape[:-1], u.shape[:-1])
    v = values.expand(shape + (jt,))
    i0 = i0.expand(shape + u.shape[-1:])
    v0 = torch.gather(v, -1, i0)
    if jt == 1:
        return v0
    v1 = torch.gather(v, -1, i0 + 1)
    return v0 + a.expand_as(v0) * (v1 - v0)


def view_overlap(target_pose, source_pose, source_depth, target_depth, columns, hfov_deg,
                 tolerance=0.25):
    """Share of the source view's columns that the target camera sees too: the column's
    point lies in the target's field of view and agrees with the target's own depth there
    within ``tolerance`` in log-depth (so walls between the two do not count as overlap).

    Poses (..., 3) in one frame; depths (..., J). Returns (...,) in [0, 1].
    """
    rel = relative(target_pose, source_pose)
    u, f, valid = warp_columns(rel, source_depth, columns, hfov_deg)
    d_t = sample_columns(target_depth, u)
    agree = (torch.log(f.clamp_min(MIN_FORWARD_M)) - torch.log(d_t.clamp_min(MIN_FORWARD_M))
             ).abs() < tolerance
    return (valid & agree).float().mean(-1)


__all__ = ['column_tangents', 'MIN_FORWARD_M', 'sample_columns', 'view_overlap',
           'warp_columns']
