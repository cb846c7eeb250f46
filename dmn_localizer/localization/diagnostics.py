"""What the localizer's diagnostics say: a level, a one-line message and the values (pure).

The node publishes them on ``/diagnostics`` every second, as ``diagnostic_updater`` does (one
status per task, named ``NODE: task``, hardware id ``dmn_localizer``;
:meth:`~dmn_localizer.nodes.localizer_node.LocalizerNode.publish_diagnostics`): the filter
(:func:`localizer_status`) and the arrival rates of the camera images and the odometry
(:func:`input_rates`, as its frequency status). Times are the tracker's clock: the node's ROS
clock, so under ``use_sim_time`` ages and rates are in sim time. The levels are
``diagnostic_msgs/DiagnosticStatus``'s (OK 0, WARN 1, ERROR 2).
"""
import math

import numpy as np

OK, WARN, ERROR = 0, 1, 2

# a time-base reset is reported this long after it happened (s)
RESET_REPORTED_S = 10.0


def filter_values(loc):
    """The values a :class:`~dmn_localizer.localization.localizer.Localizer` uses that may come
    from its model's card (the parameter when set, else the card's, else the fallback):
    ``min_evidence`` (None: the lost flag is off), ``covariance_scale``,
    ``likelihood_scale``, ``initial_likelihood_scale``, ``pose_estimate``,
    ``nearest_contexts``, ``covariance_scale_max_std``."""
    return {'min_evidence': loc.lost_flag_threshold, 'covariance_scale': loc.covariance_scale,
            'likelihood_scale': loc.likelihood_scale,
            'initial_likelihood_scale': loc.initial_likelihood_scale,
            'pose_estimate': loc.pose_estimate, 'nearest_contexts': loc.nearest_contexts,
            'covariance_scale_max_std': loc.covariance_scale_max_std}


def describe_values(values):
    """``name value, ...`` of a dict (floats as ``%g``): a log line of :func:`filter_values`
    or of the card values a command wrote."""
    return ', '.join(f'{k} {v:g}' if isinstance(v, float) else f'{k} {v}'
                     for k, v in values.items())


def localizer_status(tracker, config, map_status, device_name, now=None):
    """(level, message, values) of a :class:`~dmn_localizer.localization.tracker.Tracker`'s
    inputs and filter: no map (ERROR), odometry missing, late or reset, likelihood collapse,
    no matching view, no depth frame for the last image (WARN); ``now``: the tracker's
    clock (default its current time)."""
    loc, cfg, odom = tracker.localizer, config, tracker.odometry
    now = tracker.clock() if now is None else now
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
                         f'{h.evidence:.2f} below min_evidence {loc.min_evidence:g} in '
                         f'{h.weak_evidence} recent updates); covariance covers the map'))
    if tracker.depth_at is not None and tracker.last_without_depth:
        problems.append((WARN, f'no depth frame for the last image ({cfg.depth_topic}, within '
                         f'{cfg.depth_sync_tolerance_s:g} s): predicted depths used'))
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
              'unreliable': h.unreliable, 'unreliable_updates_total': h.unreliable_total,
              **filter_values(loc)}
    if tracker.depth_at is not None:
        values.update(images_with_depth=tracker.with_depth,
                      images_without_depth=tracker.without_depth)
    return level, message, values


def input_rates(tracker, now=None):
    """The arrival rates of the camera images and the odometry, as diagnostic_updater's
    frequency status: ``[(task, level, message, values)]``, WARN when none arrived in the
    window (once the localizer has a map: before, nothing is expected to flow)."""
    now = tracker.clock() if now is None else now
    expected = tracker.localizer.map_state is not None
    out = []
    for task, monitor, total in (('camera frequency', tracker.image_rate, tracker.images),
                                 ('odometry frequency', tracker.odometry_rate,
                                  tracker.odometry_samples)):
        rate = monitor.rate(now)
        events = len(monitor.times)
        if events >= 2:
            level, message = OK, f'{rate:.1f} Hz'
        else:
            level = WARN if expected else OK
            message = f'no events in the last {monitor.window_s:g} s'
        out.append((task, level, message, {
            'events_in_window': events, 'events_since_startup': total,
            'window_s': monitor.window_s, 'actual_frequency_hz': round(rate, 2)}))
    return out
