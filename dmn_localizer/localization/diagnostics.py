"""What the localizer's diagnostics say: a level, a one-line message and the values (pure).

The node publishes it on ``/diagnostics`` every second
(:meth:`~dmn_localizer.nodes.localizer_node.LocalizerNode.publish_diagnostics`); the levels
are ``diagnostic_msgs/DiagnosticStatus``'s (OK 0, WARN 1, ERROR 2).
"""
import math
import time

import numpy as np

OK, WARN, ERROR = 0, 1, 2

# a time-base reset is reported this long after it happened (s)
RESET_REPORTED_S = 10.0


def localizer_status(tracker, config, map_status, device_name, now=None):
    """(level, message, values) of a :class:`~dmn_localizer.localization.tracker.Tracker`'s
    inputs and filter: no map (ERROR), odometry missing, late or reset, likelihood collapse,
    no matching view (WARN); ``now``: a ``time.monotonic()`` (default the current one)."""
    loc, cfg, odom = tracker.localizer, config, tracker.odometry
    now = time.monotonic() if now is None else now
    h = loc.health
    last = tracker.last_odometry_time
    odom_age = None if last is None else now - last
    problems = []  # (level, text), most severe first after sorting
    if loc.map_state is None:
        problems.append((ERROR, f'no map: {map_status}'))
    if odom_age is None:
        problems.append((WARN, 'no odometry received' + (
            f' (TF {cfg.odom_frame_id} -> {cfg.base_frame_id})' if cfg.odom_source == 'tf'
            else f' ({cfg.odom_topic})')))
    elif odom_age > cfg.odom_timeout:
        problems.append((WARN, f'no odometry for {odom_age:.1f} s'))
    if tracker.last_reset is not None and now - tracker.last_reset[0] < RESET_REPORTED_S:
        problems.append((WARN, f'odometry {tracker.last_reset[1]}: time base reset'))
    if h.collapsed:
        problems.append((WARN, f'likelihood collapsed (count {h.collapsed}, '
                         f'belief score {h.belief_score:.2f}): recovering'))
    if h.unreliable:
        problems.append((WARN, 'lost: no view of the map matches the images (evidence '
                         f'{h.evidence:.2f} below min_evidence {cfg.min_evidence:g} in '
                         f'{h.weak_evidence} recent updates); covariance covers the map'))
    if loc.map_state is not None and not tracker.updates and not problems:
        problems.append((WARN, 'waiting for images/odometry'))
    problems.sort(key=lambda p: -p[0])  # stable: ERROR first
    level = problems[0][0] if problems else OK
    message = '; '.join(p[1] for p in problems) if problems else 'localizing'
    spread = float('nan')
    if loc.ready:
        cov = loc.estimate()[1]
        spread = math.sqrt(max(cov[0, 0] + cov[1, 1], 0.0))
    recent = list(tracker.update_seconds)[-20:]
    values = {'map': map_status, 'map_contexts': loc.map_size, 'device': device_name,
              'particles': loc.particles.shape[1] if loc.ready else 0,
              'ess': round(loc.ess(), 1), 'spread_xy_m': round(spread, 3),
              'images_received': tracker.images, 'updates': tracker.updates,
              'dropped_images': tracker.dropped, 'skipped_images': tracker.skipped,
              'update_ms_mean': round(1e3 * float(np.mean(recent)), 2) if recent else 0.0,
              'update_ms_max': round(1e3 * float(np.max(recent)), 2) if recent else 0.0,
              'odometry_received': tracker.odometry_samples,
              'odometry_age_s': round(odom_age, 2) if odom_age is not None else -1.0,
              'odometry_time_resets': odom.time_resets, 'odometry_jumps': odom.jumps,
              'belief_score': round(h.belief_score, 3), 'evidence': round(h.evidence, 3),
              'collapsed_updates': h.collapsed, 'collapsed_total': h.collapsed_total,
              'recovery_injections': h.injections,
              'recovery_global_reinits': h.global_reinits,
              'unreliable': h.unreliable, 'unreliable_updates_total': h.unreliable_total}
    return level, message, values
