"""Localization: the particle-filter Localizer, the odometry buffer, image-pose stamp pairing."""
