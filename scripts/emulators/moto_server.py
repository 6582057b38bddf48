"""moto's EC2 and Auto Scaling server on a random loopback port, made faithful where PLURA's
tests depend on it.

moto is not faithful to EC2 in two ways that matter to a pool of network interfaces, so this
wrapper changes them before serving:

1. Attaching an interface that is in use must fail with InvalidNetworkInterface.InUse, and
   atomically, as EC2 does. moto silently re-attaches it to the second instance, so two instances
   racing for one interface would both "win" and a race test would prove nothing.
2. Terminating an instance must detach its non-primary interfaces, which become available again.
   moto leaves them in-use forever. EC2 detaches them some seconds after the instance stops; with
   PLURA_MOTO_DETACH_DELAY_S set, this server waits that long too (in the background), so the
   claim's wait for interfaces of terminating instances can be tested.

It also adds one API moto lacks, CompleteLifecycleAction, with Auto Scaling's effect: CONTINUE
puts the launching instance in service, ABANDON terminates it.

It prints the port it listens on, alone on the first line of stdout, then serves until killed;
every attach it refuses because the interface is in use is a line `refused ENI to INSTANCE: in use`.
"""

import os
import sys
import threading

from werkzeug.serving import make_server

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_network_interfaces import NetworkInterfaceBackend
from moto.ec2.models.instances import Instance
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


class InterfaceInUse(EC2ClientError):
    def __init__(self, eni_id):
        super().__init__("InvalidNetworkInterface.InUse", f"Interface: [{eni_id}] in use.")


class DeviceIndexTaken(EC2ClientError):
    def __init__(self, instance_id, device_index):
        super().__init__(
            "InvalidParameterValue",
            f"Instance '{instance_id}' already has an interface attached at device index "
            f"'{device_index}'.",
        )


# EC2 decides an attachment atomically; moto's threaded server would interleave two requests
# between the check and the attach without this lock.
_attachments = threading.Lock()
_moto_attach = NetworkInterfaceBackend.attach_network_interface


def _attach_network_interface(self, eni_id, instance_id, device_index):
    with _attachments:
        eni = self.get_network_interface(eni_id)
        if eni.instance is not None or eni.status == "in-use":
            # On stdout, so tests can count the races the clients lost.
            print(f"refused {eni_id} to {instance_id}: in use", flush=True)
            raise InterfaceInUse(eni_id)
        instance = self.get_instance(instance_id)
        if int(device_index) in instance.nics:
            raise DeviceIndexTaken(instance_id, device_index)
        return _moto_attach(self, eni_id, instance_id, device_index)


_moto_terminate = Instance.terminate
_detach_delay = float(os.environ.get("PLURA_MOTO_DETACH_DELAY_S", "0"))


def _terminate(self):
    state = _moto_terminate(self)
    secondary = [nic for index, nic in self.nics.items() if int(index) != 0]

    def detach():
        with _attachments:
            for nic in secondary:
                if nic.instance is self:
                    self.detach_eni(nic)

    if _detach_delay > 0:
        threading.Timer(_detach_delay, detach).start()
    else:
        detach()
    return state


def _complete_lifecycle_action(self):
    backend = self.autoscaling_backend
    group_name = self._get_param("AutoScalingGroupName")
    hook = self._get_param("LifecycleHookName")
    instance_id = self._get_param("InstanceId")
    result = self._get_param("LifecycleActionResult")
    if f"{group_name}_{hook}" not in backend.lifecycle_hooks:
        raise ValidationError(f"No Lifecycle Hook found for {hook} on {group_name}")
    group = backend.autoscaling_groups.get(group_name)
    states = [s for s in (group.instance_states if group else []) if s.instance.id == instance_id]
    if not states:
        raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")
    if result == "CONTINUE":
        states[0].lifecycle_state = "InService"
    elif result == "ABANDON":
        states[0].lifecycle_state = "Terminating"
        backend.ec2_backend.terminate_instances([instance_id])
    else:
        raise ValidationError(f"Invalid LifecycleActionResult {result}")
    return EmptyResult()


NetworkInterfaceBackend.attach_network_interface = _attach_network_interface
AutoScalingResponse.complete_lifecycle_action = _complete_lifecycle_action
Instance.terminate = _terminate


def main():
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
