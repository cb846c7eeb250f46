"""The lifecycle (managed) node both nodes are: rclpy.lifecycle, as nav2's nodes.

nav2_lifecycle_manager (or ``ros2 lifecycle set``) drives the transitions through the node's
``~/change_state`` service: *configure* reads the parameters, loads the model (and map) and
creates the publishers, subscriptions, services and timers; *activate* enables the outputs
(lifecycle publishers) and the processing of inputs; *deactivate* stops both; *cleanup* and
*shutdown* release everything. With the parameter ``autostart`` true (the default) the node
configures and activates itself at start, a plain node for use without a lifecycle manager.
While active the node keeps a bond with the manager (:mod:`dmn_localizer.nodes.bond`).
"""
from rclpy.lifecycle import LifecycleNode, LifecyclePublisher, TransitionCallbackReturn
from rclpy.service import Service
from rclpy.subscription import Subscription
from rclpy.timer import Timer

from dmn_localizer.nodes import bond
from dmn_localizer.util.errors import UserError
from dmn_localizer.nodes.parameters import declare_config, on_parameter_changes, read_config

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class ManagedNode(LifecycleNode):
    """Subclasses implement ``setup()`` (configure: may raise UserError), ``teardown()``
    (drop what setup made besides ROS entities), ``activated()``, ``deactivating()`` and
    ``apply_parameters``, and create their ROS entities with :meth:`owned` so cleanup
    destroys them."""

    def __init__(self, name, config_cls, runtime_parameters, **kwargs):
        super().__init__(name, **kwargs)
        self.config_cls = config_cls
        self.configured = self.active = False   # before a bad parameter can raise: a node
        self._entities = []                     # left in the context is destroyed at shutdown
        self.bond = None
        self.config = declare_config(self, config_cls)
        self._autostarting = False
        self._configure_exception = None
        on_parameter_changes(self, config_cls, runtime_parameters, self.apply_parameters,
                             configured=lambda: self.configured)
        if self.config.autostart:
            self._autostarting = True
            try:
                if self.trigger_configure() != SUCCESS:  # a UserError: one line, status 2
                    raise self._configure_exception or UserError('configure failed')
            finally:
                self._autostarting = False
            self.trigger_activate()

    def destroy_node(self):
        self._close_bond()   # tells the manager, unless Ctrl-C already ended the context
        super().destroy_node()

    def _close_bond(self):
        if self.bond is not None:
            self.bond.close()
            self.bond = None

    def owned(self, entity):
        """Record a subscription, service, timer or lifecycle publisher made in setup()."""
        self._entities.append(entity)
        return entity

    def release(self):
        for entity in reversed(self._entities):
            if isinstance(entity, LifecyclePublisher):
                self.destroy_lifecycle_publisher(entity)
            elif isinstance(entity, Subscription):
                self.destroy_subscription(entity)
            elif isinstance(entity, Service):
                self.destroy_service(entity)
            elif isinstance(entity, Timer):
                self.destroy_timer(entity)
        self._entities = []
        self._close_bond()
        if self.configured:
            self.teardown()
        self.configured = self.active = False

    # ------------------------------------------------------------------ transitions
    def on_configure(self, state):
        self.config = read_config(self, self.config_cls)
        try:
            self.setup()
        except Exception as exc:
            if self._autostarting:  # __init__ raises it
                self._configure_exception = exc
            else:
                self.get_logger().error(f'configure failed: {exc}')
            self.release()
            return FAILURE
        self.configured = True
        return SUCCESS

    def on_activate(self, state):
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result == SUCCESS:
            self.active = True
            self.activated()
            self.start_bond()
        return result

    def on_deactivate(self, state):
        self.deactivating()
        self.active = False
        if self.bond is not None:
            self.bond.stop()
        return super().on_deactivate(state)

    def start_bond(self):
        period = self.config.bond_heartbeat_period
        if period <= 0:
            return
        if self.bond is None:
            status = bond.status_type()
            if status is None:
                self.get_logger().warning(
                    "no bond with a lifecycle manager: the package 'bond' is not installed "
                    '(nav2_lifecycle_manager then needs bond_timeout: 0.0)')
                return
            self.bond = bond.Bond(self, period, status)
        self.bond.start()

    def on_cleanup(self, state):
        self.release()
        return SUCCESS

    def on_shutdown(self, state):
        if self.active:
            self.deactivating()
        self.release()
        return SUCCESS

    def on_error(self, state):
        self.release()
        return SUCCESS

    def setup(self):
        raise NotImplementedError

    def teardown(self):
        pass

    def activated(self):
        pass

    def deactivating(self):
        pass

    def apply_parameters(self, changes):
        raise NotImplementedError
