"""Checks of an initial pose (``/initialpose``, ``set_initial_pose``, the saved last pose) and
the Gaussian belief it starts, as AMCL (pure numpy)."""
import math

import numpy as np

XYYAW = [0, 1, 5]  # x, y, yaw in the 6x6 (x, y, z, roll, pitch, yaw) covariance layout


class NoMapError(Exception):
    """An initial pose without a map to place it on."""


def covariance_xyyaw(covariance):
    """The (x, y, yaw) 3x3 block of a row-major 6x6 pose covariance; ValueError (the reason)
    unless it is finite, symmetric and positive semi-definite."""
    cov = np.asarray(covariance, np.float64).reshape(6, 6)
    sub = cov[np.ix_(XYYAW, XYYAW)]
    if not np.isfinite(cov).all():
        raise ValueError('covariance not finite')
    scale = max(float(np.abs(sub).max()), 1e-300)
    if not np.allclose(sub, sub.T, rtol=1e-6, atol=1e-9 * scale) \
            or float(np.linalg.eigvalsh((sub + sub.T) / 2).min()) < -1e-9 * scale:
        raise ValueError('covariance (x, y, yaw) is not symmetric positive semi-definite')
    return sub


def initial_std(mean, covariance, bounds, default_std):
    """The standard deviations (sx, sy, syaw) of the belief around ``mean`` (x, y, yaw) with
    the 6x6 pose ``covariance`` on a map whose global region is ``bounds`` (x0, y0, size; None
    without a map): zero deviations take ``default_std`` (sigma_xy, sigma_yaw), the others are
    clamped to the map size and pi. ValueError (the reason) for a covariance that is not
    usable (:func:`covariance_xyyaw`) or a mean far outside the map; :class:`NoMapError`
    without a map."""
    cov = covariance_xyyaw(covariance)
    if bounds is None:
        raise NoMapError('no map loaded')
    x0, y0, size = bounds
    if not (x0 - size <= mean[0] <= x0 + 2 * size and y0 - size <= mean[1] <= y0 + 2 * size):
        raise ValueError(f'({mean[0]:.4g}, {mean[1]:.4g}) is far outside the map')
    std = np.sqrt(np.maximum(np.diag(cov), 0.0))
    std[:2] = np.where(std[:2] > 0, np.minimum(std[:2], size), default_std[0])
    std[2] = min(std[2], math.pi) if std[2] > 0 else default_std[1]
    return std
