"""Configuration dataclasses of the ROS nodes; ROS parameter names equal the field names
(except where a field's metadata gives a dotted ROS name, e.g. ``initial_pose.x``).

Each field carries a description (and optionally a numeric range) in its metadata; the nodes
declare one ROS parameter per field from it (:mod:`dmn_localizer.nodes.parameters`), and the
YAML files under ``config/`` give the defaults users edit. No rclpy here.
"""
from dataclasses import dataclass, field, fields
from pathlib import Path


def param(default, description, lo=None, hi=None, ros_name=None):
    """A dataclass field that becomes a declared ROS parameter (named ``ros_name`` if given,
    else like the field)."""
    meta = {'description': description}
    if lo is not None:
        meta['range'] = (lo, hi)
    if ros_name is not None:
        meta['ros_name'] = ros_name
    return field(default=default, metadata=meta)


# Parameters renamed to nav2 AMCL's names: old name -> new name. A parameter file or command
# line giving an old name still works, with one deprecation warning.
RENAMED_PARAMETERS = {'map_frame': 'global_frame_id', 'odom_frame': 'odom_frame_id',
                      'base_frame': 'base_frame_id', 'camera_frame': 'camera_frame_id'}


def _spec(default, description, lo=None, hi=None):
    return {'default': default, 'description': description, 'lo': lo, 'hi': hi}


POSE_ESTIMATES = ('heaviest_cluster', 'mean')
"""The rules of the localizer's published pose (``pose_estimate``; empty: the model's)."""

# The parameters both nodes declare, each defined once here (default, description, range);
# a node's dataclass takes its field from ``shared(name)``. The frames and the map file mean
# something else to each node, so there the default is shared and each node describes its use.
SHARED_PARAMETERS = {
    # frames (REP-105)
    'global_frame_id': _spec('map', None),
    'base_frame_id': _spec('base_link', None),
    'camera_frame_id': _spec('camera_optical_frame', "Frame of the camera images (their header "
                             'frame_id, usually an optical frame); images in another frame are '
                             'used, with one warning. The camera mounting is looked up in TF '
                             "from base_frame_id to the images' frame (this one before the "
                             'first image)'),
    'autostart': _spec(True, 'Configure and activate at start (a plain node); false: wait for '
                       'a lifecycle manager (nav2_lifecycle_manager) to configure and activate '
                       'it'),
    'bond_heartbeat_period': _spec(0.1, 'Period (s) of the bond heartbeat (bond/msg/Status on '
                                   'the relative topic bond) an active node sends, as nav2\'s '
                                   'nodes do: nav2_lifecycle_manager waits for it after '
                                   'activation and resets its nodes when it stops for its '
                                   'bond_timeout. 0: no bond (the manager then needs '
                                   'bond_timeout: 0.0; the manager waits half its '
                                   'bond_timeout, 2 s, for the first heartbeat)', 0.0, 1.0),
    # inputs
    'image_topic': _spec('camera/image_raw', 'Camera topic (relative, so namespaces work)'),
    'image_transport': _spec('raw', "Image message type: 'raw' (sensor_msgs/Image) or "
                             "'compressed' (sensor_msgs/CompressedImage on TOPIC/compressed)"),
    'depth_topic': _spec('', 'Depth image registered to the camera images (sensor_msgs/Image, '
                         '32FC1 in m or 16UC1 in mm, same size and field of view, e.g. an '
                         'RGB-D camera\'s aligned depth); empty = none. Models that use '
                         'column depths (aligned) take the measured ones instead of predicting '
                         'them; a frame is paired with the image of the nearest stamp within '
                         'depth_sync_tolerance_s'),
    'depth_sync_tolerance_s': _spec(0.05, 'Max stamp difference when pairing a depth frame '
                                    'with a camera image, seconds', 0.0, 1.0),
    'depth_range': _spec(3.0, 'With depth_topic: the depth camera\'s range (m). Sensors give no '
                         'reading beyond it, so an image column without any reading is taken '
                         'to be at least this far (the predicted depth there is raised to it); '
                         '0: such columns keep the predicted depth', 0.0, 100.0),
    'camera_offset_x': _spec(0.0, 'Camera position in base frame, x (m); used when TF has no '
                             'base_frame_id -> camera frame (/tf_static)', -10.0, 10.0),
    'camera_offset_y': _spec(0.0, 'Camera position in base frame, y (m); used when TF has no '
                             'base_frame_id -> camera frame', -10.0, 10.0),
    'camera_offset_yaw': _spec(0.0, 'Camera heading in base frame (rad); used when TF has no '
                               'base_frame_id -> camera frame', -3.1416, 3.1416),
    # model and map
    'model': _spec('', 'Model weights (.safetensors); empty = the shipped mazes model '
                   '(models/aligned_mazes_e2e)'),
    'map_file': _spec('', None),
    'image_size': _spec(32, 'Images are resized to this square size for the model', 8, 512),
    'device': _spec('auto', "Torch device: 'auto', 'cpu' or 'cuda'"),
    'cpu_threads': _spec(1, "Torch CPU threads of the node's process; 1 keeps the model on "
                         "one core, which is faster and steadier while other processes use "
                         "the CPUs (torch's own default, a thread per core, waits for busy "
                         "cores); 0 = torch's default", 0, 256),
}


def shared(name, description=None):
    """The field of the shared parameter ``name`` (:data:`SHARED_PARAMETERS`); ``description``
    only where the node describes its own use of it (the entry has none)."""
    spec = SHARED_PARAMETERS[name]
    if (description is None) == (spec['description'] is None):
        raise TypeError(f'shared parameter {name}: give a description if and only if '
                        'SHARED_PARAMETERS has none')
    meta = param(spec['default'], description or spec['description'], spec['lo'],
                 spec['hi']).metadata
    return field(default=spec['default'], metadata={**meta, 'shared': name})


@dataclass
class MapperConfig:
    # frames (REP-105)
    global_frame_id: str = shared('global_frame_id', 'Frame of the map the context poses are '
                                  'expressed in; poses in another frame are ignored')
    base_frame_id: str = shared('base_frame_id', 'Robot base frame, whose pose the pose source '
                                'gives; odometry with another child_frame_id is used, with one '
                                'warning')
    camera_frame_id: str = shared('camera_frame_id')
    autostart: bool = shared('autostart')
    bond_heartbeat_period: float = shared('bond_heartbeat_period')
    # inputs
    image_topic: str = shared('image_topic')
    image_transport: str = shared('image_transport')
    depth_topic: str = shared('depth_topic')
    depth_sync_tolerance_s: float = shared('depth_sync_tolerance_s')
    depth_range: float = shared('depth_range')
    pose_topic: str = param('ground_truth/pose', 'Pose source topic giving base poses in the map')
    pose_type: str = param('pose_stamped', "Pose message type: 'pose_stamped', "
                           "'pose_with_covariance_stamped' or 'odometry'")
    sync_tolerance_s: float = param(0.05, 'Max stamp difference when pairing an image with a '
                                    'pose, seconds', 0.0, 10.0)
    camera_offset_x: float = shared('camera_offset_x')
    camera_offset_y: float = shared('camera_offset_y')
    camera_offset_yaw: float = shared('camera_offset_yaw')
    # keyframe selection
    keyframe_min_distance: float = param(2.0, 'Add a context when the camera moved this far '
                                         'from the nearest context (m)', 0.0, 1000.0)
    keyframe_min_angle: float = param(0.5, 'Or turned this much relative to it (rad)',
                                      0.0, 3.1416)
    # model and map
    model: str = shared('model')
    map_file: str = shared('map_file', 'Map file to start from (empty = start with an empty '
                           'map)')
    save_path: str = param('dmn_map.dmnmap', 'Where ~/save_map writes the map')
    image_size: int = shared('image_size')
    device: str = shared('device')
    cpu_threads: int = shared('cpu_threads')


@dataclass
class LocalizerConfig:
    # frames (REP-105)
    global_frame_id: str = shared('global_frame_id', 'Global frame of the estimate, the map '
                                  'and initialpose')
    odom_frame_id: str = param('odom', 'Odometry frame: the TF published is global_frame_id '
                               '-> odom_frame_id; odometry in another frame is used, with one '
                               'warning')
    base_frame_id: str = shared('base_frame_id', 'Robot base frame: odometry with another '
                                'child_frame_id is used, with one warning')
    camera_frame_id: str = shared('camera_frame_id')
    autostart: bool = shared('autostart')
    bond_heartbeat_period: float = shared('bond_heartbeat_period')
    # inputs
    image_topic: str = shared('image_topic')
    image_transport: str = shared('image_transport')
    depth_topic: str = shared('depth_topic')
    depth_sync_tolerance_s: float = shared('depth_sync_tolerance_s')
    depth_range: float = shared('depth_range')
    camera_info_topic: str = param('camera/camera_info', 'sensor_msgs/CameraInfo topic: its '
                                   'field of view is given to models that use the camera '
                                   'geometry (aligned); a model trained with another camera '
                                   'gets one warning')
    odom_source: str = param('tf', "Where odometry (odom_frame_id -> base_frame_id) comes "
                             "from: 'tf' (as AMCL: each new odom -> base transform on /tf, "
                             "through any chain of frames) or 'topic' (nav_msgs/Odometry on "
                             'odom_topic)')
    odom_topic: str = param('odom', "nav_msgs/Odometry topic giving odom -> base (odom_source "
                            "'topic')")
    initial_pose_topic: str = param('initialpose', 'Initial pose (RViz 2D Pose Estimate)')
    camera_offset_x: float = shared('camera_offset_x')
    camera_offset_y: float = shared('camera_offset_y')
    camera_offset_yaw: float = shared('camera_offset_yaw')
    # model and map
    model: str = shared('model')
    map_file: str = shared('map_file', 'Map file written by the mapper (~/save_map)')
    image_size: int = shared('image_size')
    device: str = shared('device')
    cpu_threads: int = shared('cpu_threads')
    camera_hfov_deg: float = param(0.0, "The camera's horizontal field of view (degrees) for "
                                   'models that use the camera geometry (architecture '
                                   "aligned); 0 = the model's training camera", 0.0, 179.0)
    context_pooling: str = param('overlap_attention', 'How an aligned model combines the '
                                 "contexts a particle attends to: 'overlap_attention' (weighted "
                                 'by view overlap: on a dense map a place seen from many views '
                                 "counts once), 'sum' (each context adds its evidence, as on "
                                 "the paper's 4 sparse contexts) or 'model' (as the model was "
                                 'trained, its card); ignored for the DMN')
    precision: str = param('fp32', "Observation model arithmetic: 'fp32', or 'bf16' (bf16 "
                           'autocast for the convolutions, attention in fp32: faster where '
                           'the CPU or GPU has bf16 instructions, log-likelihoods close to '
                           'fp32)')
    nearest_contexts: int = param(-1, 'Each particle attends to this many nearest map '
                                  'contexts (0 = all), so the update cost does not grow with '
                                  'the map; more contexts smooth the likelihood between views '
                                  'and cost time in proportion (-1 = the value chosen for the '
                                  "model, from its card, else 8)", -1, 100000)
    max_context_distance: float = param(5.0, 'A particle whose camera is farther than this from '
                                        'every map context has no view to be compared with: it '
                                        "scores as the update's least-matching context pose "
                                        'instead of by the model (m, 0 = off)', 0.0, 1000.0)
    # particle filter (AMCL names where they exist)
    num_particles: int = param(256, 'Particles when tracking from an initial pose', 1, 1000000)
    global_num_particles: int = param(2048, 'Particles for global localization', 1, 1000000)
    global_initial_particles: int = param(
        16384, 'Poses drawn uniformly for the first image of a global localization (at start '
        'and at a global re-initialisation); that update resamples them down to '
        'global_num_particles, so the cloud starts where the first image fits (0 or less than '
        'global_num_particles: global_num_particles)', 0, 10000000)
    # initial pose (AMCL's parameters) and the last pose kept across restarts
    set_initial_pose: bool = param(False, 'At activation, start from initial_pose.* (with '
                                   'initial_sigma_xy / initial_sigma_yaw) instead of the saved '
                                   'last pose or global localization')
    initial_pose_x: float = param(0.0, 'Initial pose x in global_frame_id (m)', -1e6, 1e6,
                                  ros_name='initial_pose.x')
    initial_pose_y: float = param(0.0, 'Initial pose y in global_frame_id (m)', -1e6, 1e6,
                                  ros_name='initial_pose.y')
    initial_pose_z: float = param(0.0, 'Initial pose z (m): not used (planar filter); '
                                  "AMCL's parameter set", -1e6, 1e6, ros_name='initial_pose.z')
    initial_pose_yaw: float = param(0.0, 'Initial pose yaw (rad)', -6.3, 6.3,
                                    ros_name='initial_pose.yaw')
    always_reset_initial_pose: bool = param(False, 'Do not start from the saved last pose: '
                                            'without set_initial_pose or an initialpose '
                                            'message, localize globally')
    save_pose_rate: float = param(0.5, 'Rate at which the estimate is saved to pose_file, to '
                                  'start from at the next activation or restart (Hz, <= 0 = '
                                  'never)', -1.0, 100.0)
    pose_file: str = param('', 'Where the last pose is saved (YAML, written atomically); '
                           'empty = $ROS_HOME/dmn_localizer/<namespace>_<node>_pose.yaml, '
                           'ROS_HOME defaulting to ~/.ros')
    initial_sigma_xy: float = param(1.0, 'x-y sigma of initial_pose.*, and of an initialpose '
                                    'message whose covariance is zero (m)', 0.0, 100.0)
    initial_sigma_yaw: float = param(0.3, 'Yaw sigma of initial_pose.*, and of an '
                                     'initialpose message whose covariance is zero (rad)',
                                     0.0, 3.2)
    motion_noise_xy: float = param(0.1, 'Transition noise, std per metre moved (m/m)', 0.0, 10.0)
    motion_noise_yaw: float = param(0.05, 'Transition noise, std per radian turned plus per '
                                    'metre moved (rad)', 0.0, 10.0)
    motion_jump_share: float = param(0.05, 'Heavy tail of the transition: at each update this '
                                     'share of the particles (times the evidence share, see '
                                     'evidence_min_d) moves by extra noise of std '
                                     'motion_jump_xy / motion_jump_yaw, so a cloud that settled '
                                     'beside the true pose keeps searching around itself; '
                                     'no jumps while the collapse or weak-evidence count is '
                                     'positive. 0 = off', 0.0, 1.0)
    motion_jump_xy: float = param(0.5, 'x and y std of a jump (m)', 0.0, 100.0)
    motion_jump_yaw: float = param(0.17, 'Yaw std of a jump (rad)', 0.0, 3.2)
    update_min_d: float = param(0.25, 'Translation needed before a filter update (m)',
                                0.0, 100.0)
    update_min_a: float = param(0.2, 'Rotation needed before a filter update (rad)', 0.0, 6.3)
    force_update_when_still: bool = param(False, 'Update on every image even when not moving')
    evidence_min_d: float = param(0.5, 'Translation after which an image counts as an '
                                  'independent observation (m): an update after less motion '
                                  'weighs its likelihoods by the share moved (the larger of '
                                  'the translation and rotation shares), so the evidence per '
                                  'metre does not grow with the frame rate; forced updates '
                                  'count fully; 0: every update counts fully', 0.0, 100.0)
    evidence_min_a: float = param(0.5, 'Rotation after which an image counts as an independent '
                                  'observation (rad), as evidence_min_d', 0.0, 6.3)
    likelihood_scale: float = param(-1.0, "Factor on the model's log-likelihoods in the "
                                    'particle weights of an update after motion, on top of the '
                                    'evidence share (forced updates count fully; the first '
                                    'image of a new belief: initial_likelihood_scale): below 1 '
                                    'tempers a model whose scores, multiplied image after image, '
                                    'would settle the cloud on one of several '
                                    'look-alike places with a tight spread (-1 or any value <= 0 '
                                    '= the value calibrated for the model, from its card, else '
                                    '1); the lost flag reads the unscaled scores',
                                    -1.0, 100.0)
    initial_likelihood_scale: float = param(
        -1.0, "Factor on the model's log-likelihoods in the particle weights of the first "
        'update of a new belief (global localization, an initial pose, a re-initialisation): '
        'one image, which no earlier image has given evidence of. A model whose single image '
        'scores are flatter than its errors (a first cloud wider than it needs to be) has a '
        'value above 1 (-1 or any value <= 0 = the value calibrated for the model, from its '
        'card, for the camera it was calibrated with; else 1); the lost flag reads the '
        'unscaled scores', -1.0, 100.0)
    resample_ess_ratio: float = param(0.5, 'Resample when ESS < ratio * particles', 0.0, 1.0)
    resample_jitter: float = param(1.0, 'Regularised resampling: after each resampling every '
                                   'particle moves by Gaussian kernel noise of this factor times '
                                   "the kernel density bandwidth of the cloud's covariance "
                                   "(Silverman's rule, about a third of the cloud's spread at "
                                   '2,048 particles, the spread taken at most 1 m and 0.2 rad), '
                                   'so duplicated particles spread out and a cloud that settled '
                                   'beside the true pose where the images change little can '
                                   'still move to it; 0 = off', 0.0, 10.0)
    # filter health: likelihood collapse (kidnapped robot) -> recovery
    health_samples: int = param(64, 'Random poses scored per update as the reference of the '
                                'belief score (0 = no collapse detection)', 0, 100000)
    collapse_score: float = param(0.6, 'An update has collapsed when the belief\'s mean '
                                  'likelihood beats less than this share of the random poses',
                                  0.0, 1.0)
    collapse_updates: int = param(3, 'Collapse count (+1 per collapsed, -1 per healthy update) '
                                  'from which random particles are injected', 1, 100000)
    recovery_alpha: float = param(0.1, 'Share of particles re-drawn uniformly at each '
                                  'collapsed update from collapse_updates on, and at each '
                                  'update while the estimate is lost (see min_evidence and '
                                  'lost_search_delay; not '
                                  "with the fallback for a model whose card has no value; "
                                  '0 = off)', 0.0, 1.0)
    lost_search_delay: int = param(10, 'Updates in a row the estimate must have been lost '
                                   '(see min_evidence) before the search while lost redraws '
                                   'recovery_alpha of the particles at each further lost '
                                   'update: a track lost for a few views the model does not '
                                   'recognise keeps its cloud, which random particles on a '
                                   'look-alike place could take over (the collapse monitor\'s '
                                   'injections do not wait; 0 = search at once)', 0, 100000)
    global_reinit_updates: int = param(8, 'Collapse count at which the filter re-initialises '
                                       'globally (0 = never)', 0, 100000)
    min_evidence: float = param(-1.0, 'For models whose scores are log-likelihood ratios '
                                'against a view that tells nothing (architecture aligned): '
                                "when the belief's log mean likelihood ratio stays below this "
                                'for collapse_updates updates, no view of the map backs the '
                                'estimate: it is flagged unreliable in /diagnostics and its '
                                'published covariance covers the map (-1 = the value calibrated '
                                "for the model, from its card, else 3.5; 0 = off; ignored for "
                                'the DMN, whose scores have no scale)',
                                -1.0, 1000.0)
    covariance_scale: float = param(-1.0, "Factor on the particle cloud's covariance in the "
                                    'published estimate (the cloud of a model whose likelihood '
                                    'is wider than its errors overstates the uncertainty once '
                                    "tracking: x-y NEES below 2); a lost estimate's map-wide "
                                    'term is added unscaled (-1 or any value <= 0 = the value '
                                    'calibrated for the model, from its card, for the camera '
                                    'it was calibrated with; else 1)',
                                    -1.0, 1000.0)
    covariance_scale_max_std: float = param(-1.0, 'A covariance_scale below 1 applies only '
                                            "while the particle cloud's x-y standard "
                                            'deviation (root mean square of x and y) is below '
                                            'this (m): a wider cloud, converging or searching, '
                                            'is published as it is; a scale above 1 applies to '
                                            'every cloud (0 = a scale below 1 does too; -1 = '
                                            "the value chosen with the model's scale, from its "
                                            'card, else 0.5)',
                                            -1.0, 1000.0)
    covariance_scale_min_updates: int = param(20, 'And only once the cloud has stayed below '
                                              'covariance_scale_max_std for this many '
                                              'updates in a row: a cloud that just converged '
                                              'may still sit beside the true pose', 0, 100000)
    pose_estimate: str = param('', "The published pose: 'mean' (the weighted mean of all "
                               "particles) or 'heaviest_cluster' (as AMCL: the weighted mean "
                               'of the particle cluster holding the most weight, particles '
                               'joined through touching cells of 0.5 m and 10 deg: closer once '
                               'converged, but it jumps to a wrong mode that briefly holds the '
                               'most weight); empty (the default): the rule chosen for the '
                               "model (its card's metadata.pose_estimate), else 'mean'. The "
                               'covariance is the spread of the whole cloud around that pose')
    # input health
    odom_jump_threshold: float = param(1.0, 'Odometry moving more than this plus '
                                       'odom_max_speed * dt between two consecutive messages '
                                       'is a jump: not applied to the filter (time base '
                                       'restarts), flagged in diagnostics (m, 0 = off)',
                                       0.0, 1000000.0)
    odom_max_speed: float = param(5.0, 'Fastest the robot drives, for the jump test (m/s)',
                                  0.0, 1000.0)
    odom_timeout: float = param(1.0, 'Diagnostics warn when no odometry arrived for this '
                                'long (s)', 0.01, 3600.0)
    transform_tolerance: float = param(1.0, 'Future-date map->odom by this much (s), so it '
                                       'stays valid until the next update', 0.0, 10.0)
    tf_broadcast: bool = param(True, 'Publish map -> odom on /tf')
    publish_particles: bool = param(True, 'Publish ~/particles (PoseArray) and markers')


def ros_name(f):
    """The ROS parameter name of a config dataclass field."""
    return f.metadata.get('ros_name', f.name)


def field_specs(config_cls):
    """(ROS name, default, description, range or None) for each field of a config dataclass."""
    return [(ros_name(f), f.default, f.metadata['description'], f.metadata.get('range'))
            for f in fields(config_cls)]


def strict_from_dict(config_cls, d, what):
    """``config_cls(**d)``; unknown keys raise ValueError listing the valid ones."""
    names = {f.name for f in fields(config_cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f'unknown {what} keys {sorted(unknown)}; valid: {sorted(names)}')
    return config_cls(**d)


# Config fields a set_parameters request applies at once; the others (frames, topics, model,
# device, image size, precision, camera field of view) are read at configure.
MAPPER_RUNTIME_PARAMETERS = frozenset({
    'sync_tolerance_s', 'camera_offset_x', 'camera_offset_y', 'camera_offset_yaw',
    'keyframe_min_distance', 'keyframe_min_angle', 'save_path'})
LOCALIZER_RUNTIME_PARAMETERS = frozenset({
    'camera_offset_x', 'camera_offset_y', 'camera_offset_yaw', 'map_file', 'nearest_contexts',
    'num_particles', 'global_num_particles', 'global_initial_particles', 'initial_sigma_xy',
    'initial_sigma_yaw',
    'motion_noise_xy', 'motion_noise_yaw', 'motion_jump_share', 'motion_jump_xy',
    'motion_jump_yaw', 'update_min_d', 'update_min_a',
    'force_update_when_still', 'evidence_min_d', 'evidence_min_a', 'likelihood_scale',
    'initial_likelihood_scale',
    'resample_ess_ratio', 'resample_jitter', 'health_samples', 'collapse_score',
    'collapse_updates', 'recovery_alpha', 'lost_search_delay', 'global_reinit_updates',
    'min_evidence',
    'covariance_scale', 'covariance_scale_max_std', 'covariance_scale_min_updates',
    'max_context_distance', 'odom_jump_threshold',
    'odom_max_speed', 'odom_timeout', 'transform_tolerance', 'tf_broadcast',
    'publish_particles', 'set_initial_pose', 'initial_pose_x', 'initial_pose_y',
    'initial_pose_z', 'initial_pose_yaw', 'always_reset_initial_pose', 'save_pose_rate',
    'pose_file'})


# Parameters a node takes besides its config fields (launch and rclpy's own).
NODE_PARAMETERS = frozenset({'map_file', 'model', 'autostart', 'use_sim_time'})


def _flatten(params, prefix=''):
    """Nested YAML parameters -> {dotted name: value} (as rclpy reads a parameters file)."""
    flat = {}
    for key, value in params.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(_flatten(value, name + '.'))
        else:
            flat[name] = value
    return flat


def node_parameters(path, node, required=True):
    """{dotted name: value} a ROS 2 parameters file gives the node named ``node``: the
    ``ros__parameters`` of ``/**`` (every node), then of ``node``, ``/**/node`` or
    ``/NS/node`` (nested names flattened; a section under any namespace counts). ValueError
    (one line) for a file that is not a parameters file, and (``required``) for one with no
    section for the node; else {} then (``/**`` alone does not make a section)."""
    import yaml
    try:
        data = yaml.safe_load(Path(path).read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f'{path}: cannot read it as YAML ({str(exc).splitlines()[0]})') from None
    if not isinstance(data, dict):
        raise ValueError(f'{path}: not a ROS 2 parameters file (a mapping of node names to '
                         'ros__parameters)')
    keys = [k for k in data if isinstance(k, str)
            and (k == '/**' or k.rstrip('/').split('/')[-1] == node)]
    if not any(k != '/**' for k in keys):
        if not required:
            return {}
        if not keys:
            raise ValueError(f'{path}: no parameters for node {node!r} (sections: '
                             f'{", ".join(map(str, data)) or "none"})')
    flat = {}
    for key in sorted(keys, key=lambda k: k != '/**'):     # the node's own section wins
        section = data[key]
        params = section.get('ros__parameters') if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise ValueError(f'{path}: section {key!r} has no ros__parameters mapping')
        flat.update(_flatten(params))
    return flat


def read_params_file(path, node, config_cls):
    """What a ROS 2 parameters file gives the node named ``node``, as rclpy would read it for
    the config dataclass ``config_cls``: {field name: value} (:func:`node_parameters`;
    renamed parameters under their new names). Returns (values, warnings): parameters the node
    does not declare are ignored by rclpy, so they are warnings here. ValueError (one line)
    for a file that is not a parameters file or has no section for the node, and for a value
    of the wrong type or out of range (the node refuses those too)."""
    flat = node_parameters(path, node)
    for old, new in RENAMED_PARAMETERS.items():
        if old in flat:
            value = flat.pop(old)
            flat.setdefault(new, value)
    by_name = {ros_name(f): f for f in fields(config_cls)}
    values, warnings = {}, []
    for name, value in flat.items():
        f = by_name.get(name)
        if f is None:
            if name not in NODE_PARAMETERS and not name.startswith('qos_overrides.'):
                warnings.append(f'{path}: parameter {name!r} is not one of the {node} node\'s: '
                                'ignored (as the node ignores it)')
            continue
        expected = type(f.default)
        if expected is float and type(value) is int:
            value = float(value)     # as the nodes take it
        if type(value) is not expected:
            raise ValueError(f'{path}: {name} must be {expected.__name__}, not {value!r}')
        rng = f.metadata.get('range')
        if rng is not None and not rng[0] <= value <= rng[1]:
            raise ValueError(f'{path}: {name} = {value} is outside [{rng[0]}, {rng[1]}]')
        values[f.name] = value
    return values, warnings
