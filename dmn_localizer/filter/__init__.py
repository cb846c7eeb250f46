"""Particle filter over planar poses: log-space weights, egomotion transition and its heavy
tail, systematic and soft (differentiable) resampling, weighted circular mean, covariance and
ESS. Pure torch."""
from dmn_localizer.filter.particle_filter import (
    covariance, effective_sample_size, FilterConfig, jump, normalize_log_weights, ParticleFilter,
    sample_gaussian, sample_uniform, soft_resample, systematic_resample, transition,
    weighted_mean)

__all__ = ['covariance', 'effective_sample_size', 'FilterConfig', 'jump', 'normalize_log_weights',
           'ParticleFilter', 'sample_gaussian', 'sample_uniform', 'soft_resample',
           'systematic_resample', 'transition', 'weighted_mean']
