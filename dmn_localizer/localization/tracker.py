"""The feed loop: odometry samples and camera images in, filter steps out (pure, no rclpy).

:class:`Tracker` is the one owner of time and order between the inputs and the
:class:`~dmn_localizer.localization.localizer.Localizer`; the localizer node and offline replay
both drive it, with their messages and a bag's in stamp order:

- :meth:`Tracker.add_odometry` ``(stamp, odom_from_base (x, y, yaw))`` feeds the
  :class:`~dmn_localizer.localization.odometry.OdometryBuffer`. Odometry time going backwards or
  jumping restarts the time base: the localizer forgets the previous image stamp
  (:meth:`Localizer.reset_time`) and a waiting image is dropped.
- :meth:`Tracker.add_image` ``(stamp, rgb)``: an image newer than the latest odometry waits
  for the odometry that covers its stamp (a newer image replaces it, to stay real time); the
  odometry sample that covers it sends it through the filter.
- An image through the filter: :meth:`Localizer.step` with the health check deferred; the
  ``publish`` callback gets ``(stamp, report)`` (the node publishes the estimate, or only TF
  when the filter did not update); then the health check runs (and any recovery it calls for),
  so its work is not in the image-to-pose latency.

Each call returns an :class:`Outcome`: what the event did. The tracker also counts what the
node's diagnostics report (images, dropped and skipped images, updates and their times,
odometry samples, their last arrival and the last time-base reset).
"""
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

import torch

from dmn_localizer.localization.health import UpdateReport
from dmn_localizer.localization.odometry import OdometryBuffer
from dmn_localizer.localization.rates import RateMonitor


@dataclass
class Outcome:
    """What one event did."""
    stamp: Optional[float] = None          # the image that went through the filter, if any
    report: Optional[UpdateReport] = None  # its report; None with a stamp: skipped (no
    #                                        odometry around the stamp, or out of order)
    seconds: float = 0.0   # the image in the filter, publishing and health check included
    reset: str = ''        # why the odometry time base restarted ('' when it did not)
    dropped: int = 0       # waiting images this event dropped

    @property
    def processed(self):
        return self.stamp is not None

    @property
    def skipped(self):
        return self.processed and self.report is None

    @property
    def updated(self):
        return self.report is not None and self.report.updated


def odometry_buffer(config):
    """The node's odometry history: jump detection from ``odom_jump_threshold`` and
    ``odom_max_speed`` (a :class:`~dmn_localizer.config.LocalizerConfig`)."""
    return OdometryBuffer(max_jump_m=config.odom_jump_threshold, max_speed=config.odom_max_speed)


class Tracker:
    """The feed loop of one localizer (see the module docstring). ``odometry``: the
    :class:`OdometryBuffer` to fill (default :func:`odometry_buffer` of the localizer's
    config); ``publish(stamp, report)``: called for each image the filter consumed, before
    its health check; ``clock()``: the time (s) of arrivals, for the odometry age and the input
    rates (default ``time.monotonic``; the node gives its ROS clock, so sim time counts);
    ``depth_at(stamp)``: a depth camera's column depths for an image stamp, or None
    (:meth:`~dmn_localizer.depth.DepthBuffer.at`; default: no depth camera)."""

    def __init__(self, localizer, odometry=None, publish=None, clock=time.monotonic,
                 depth_at=None):
        self.localizer = localizer
        self.depth_at = depth_at
        self.clock = clock
        self.image_rate = RateMonitor()       # arrivals of images and odometry samples
        self.odometry_rate = RateMonitor()
        self.odometry = odometry_buffer(localizer.config) if odometry is None else odometry
        self.publish = publish
        self.waiting = None            # (stamp, rgb) until odometry covers its stamp
        self.images = 0                # images received (with or without a map)
        self.dropped = 0               # waiting images replaced or dropped at a reset
        self.skipped = 0               # no odometry around the stamp
        self.with_depth = 0            # images processed with / without a depth frame (when
        self.without_depth = 0         # ``depth_at`` is given), and whether the last one had
        self.last_without_depth = False  # none
        self.updates = 0
        self.update_seconds = deque(maxlen=100)
        self.odometry_samples = 0
        self.last_odometry_time = None  # clock() at the last odometry sample
        self.last_reset = None         # (clock(), why) of the last time-base reset

    def configure(self, config, base_from_camera):
        """A new :class:`~dmn_localizer.config.LocalizerConfig` (runtime parameter changes)
        and camera mounting (x, y, yaw), used from the next event on."""
        self.localizer.config = config
        self.localizer.base_from_camera = torch.as_tensor(base_from_camera, dtype=torch.float32)
        self.odometry.max_jump = config.odom_jump_threshold
        self.odometry.max_speed = config.odom_max_speed

    def clear(self):
        """Forget the waiting image (a new map or belief makes it stale)."""
        self.waiting = None

    def add_odometry(self, stamp, odom_from_base):
        """One odometry sample: ``odom_from_base`` (x, y, yaw) at ``stamp`` (s). Sends the
        waiting image through the filter once the odometry covers its stamp."""
        self.odometry_samples += 1
        self.last_odometry_time = self.clock()
        self.odometry_rate.tick(self.last_odometry_time)
        if self.odometry.add(stamp, odom_from_base):
            reason = self.odometry.last_reset
            self.last_reset = (self.last_odometry_time, reason)
            self.localizer.reset_time()
            dropped = int(self.waiting is not None)
            self.dropped += dropped
            self.waiting = None
            return Outcome(reset=reason, dropped=dropped)
        if self.waiting is not None and self.odometry.latest_stamp >= self.waiting[0]:
            (image_stamp, rgb), self.waiting = self.waiting, None
            return self._process(image_stamp, rgb)
        return Outcome()

    def add_image(self, stamp, rgb):
        """One camera image (H, W, 3) uint8 RGB at the model's image size, taken at ``stamp``
        (s): through the filter now if the odometry covers its stamp, else it waits."""
        self.images += 1
        self.image_rate.tick(self.clock())
        if not self.localizer.ready:
            return Outcome()
        latest = self.odometry.latest_stamp
        if latest is None or latest < stamp:
            dropped = int(self.waiting is not None)
            self.dropped += dropped
            self.waiting = (stamp, rgb)
            return Outcome(dropped=dropped)
        return self._process(stamp, rgb)

    def _process(self, stamp, rgb):
        t0 = time.perf_counter()
        depth = None
        if self.depth_at is not None:
            depth = self.depth_at(stamp)
            self.last_without_depth = depth is None
            if depth is None:
                self.without_depth += 1
            else:
                self.with_depth += 1
        report = self.localizer.step(stamp, rgb, self.odometry, defer_health=True, depth=depth)
        if report is None:
            self.skipped += 1
            return Outcome(stamp, None, time.perf_counter() - t0)
        if self.publish is not None:
            self.publish(stamp, report)
        if report.updated:
            self.localizer.check_health()   # fills in the report's health fields
        seconds = time.perf_counter() - t0
        if report.updated:
            self.updates += 1
            self.update_seconds.append(seconds)
        return Outcome(stamp, report, seconds)
