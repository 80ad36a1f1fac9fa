"""cloudify.aws.nodes.Instance: an EC2 instance through its whole lifecycle.

create (``run_instances``): validate the properties and build one RunInstances
request (image, type, ``parameters`` in boto 2 or boto3 spelling, key pair and
security groups from relationships and the provider context, user data with
the agent's init script, tags), adopt an instance an interrupted create left
behind, else run one with a stable ``ClientToken`` and record its id at once.
start: start it if stopped, wait until running, record its addresses. stop:
stop it, wait, forget the addresses. delete (``terminate``): terminate it, wait,
forget everything. An external instance is only checked and recorded.
"""

from __future__ import annotations

import re
from typing import Any

from cloudify.decorators import operation
from cloudify.exceptions import NonRecoverableError, RecoverableError

from ec2 import constants, instance_request, utils

KIND = "instance"

INSTANCE_ID_PATTERN = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")

# States in which an instance counts as existing (adoptable, startable, ...).
LIVE_STATES = ("pending", "running", "stopping", "stopped")
GONE_STATES = ("shutting-down", "terminated")
NOT_FOUND = "not-found"
# An instance between states refuses start and stop for a moment: retry later.
IN_TRANSITION = ("IncorrectInstanceState",)

# Every runtime property this module sets; delete pops them all.
RUNTIME_PROPERTIES = (
    constants.AWS_RESOURCE_ID,
    constants.EXTERNAL_RESOURCE,
    constants.RESERVATION_ID,
    *constants.INSTANCE_NETWORK_PROPERTIES,
)

# --- operations -------------------------------------------------------------


@operation(resumable=True)
def run_instances(ctx, **_):
    """create: runs one instance, or adopts the one this node instance owns."""
    instance_request.check_external_relationships(ctx)
    client = utils.client_for(ctx.node)
    if utils.adopt_external(ctx, KIND, _external_finder(ctx, client)):
        return

    request = instance_request.build_request(ctx)
    if _adopt_own(ctx, client):
        return

    instance, reservation_id = _run(ctx, client, request)
    instance_id = instance["InstanceId"]
    utils.record(
        ctx.instance,
        save=True,
        **{constants.AWS_RESOURCE_ID: instance_id, constants.RESERVATION_ID: reservation_id},
    )
    ctx.logger.info(f"Launched instance {instance_id} (reservation {reservation_id}) from {request['ImageId']}.")


@operation(resumable=True)
def start(ctx, **_):
    """Starts the instance if it is stopped, waits until it runs, records its addresses."""
    client = utils.client_for(ctx.node)
    instance_id = _recorded_id(ctx)
    instance = _describe(ctx, client, instance_id)
    state = _state(instance)
    if utils.use_external(ctx.node):
        if state == NOT_FOUND:
            raise _gone(ctx, instance_id)
        _record_addresses(ctx, instance)
        return
    if state == NOT_FOUND:
        # EC2 is eventually consistent: a new instance may not be visible yet.
        raise RecoverableError(
            f"{utils.node_label(ctx)}: instance {instance_id} is not visible yet; trying again.",
            retry_after=utils.wait_settings(ctx.node)[2],
        )
    if state in GONE_STATES:
        raise _gone(ctx, instance_id, state)

    if state == "stopping":
        instance = _wait(ctx, client, instance_id, "stopped")
        if instance is None:
            return
        state = _state(instance)
    if state == "stopped":
        utils.call(ctx, client, "start_instances", retry_codes=IN_TRANSITION, InstanceIds=[instance_id])
        ctx.logger.info(f"Starting instance {instance_id}.")
    if state != "running":
        instance = _wait(ctx, client, instance_id, "running", failed=GONE_STATES)
        if instance is None:
            return
    _record_addresses(ctx, instance)


@operation(resumable=True)
def stop(ctx, **_):
    """Stops the instance, waits until it is stopped, forgets its addresses.

    With no instance recorded (a failed or interrupted install), it stops the
    live instances tagged as this node instance's, if any, and otherwise only
    logs: uninstall must get through after any failed install.
    """
    if utils.use_external(ctx.node):
        utils.forget(ctx.instance, *constants.INSTANCE_NETWORK_PROPERTIES)
        ctx.logger.info("External instance: addresses forgotten; the instance is left as it is.")
        return
    client = utils.client_for(ctx.node)
    instance_ids = _own_instance_ids(ctx, client)
    if not instance_ids:
        ctx.logger.info("No instance was recorded or found for this node instance; there is nothing to stop.")
    for instance_id in instance_ids:
        state = _state(_describe(ctx, client, instance_id))
        if state in GONE_STATES or state == NOT_FOUND:
            ctx.logger.warning(f"Instance {instance_id} is {state}; there is nothing to stop.")
            continue
        if state not in ("stopping", "stopped"):
            utils.call(ctx, client, "stop_instances", retry_codes=IN_TRANSITION, InstanceIds=[instance_id])
            ctx.logger.info(f"Stopping instance {instance_id}.")
        if state != "stopped" and _wait(ctx, client, instance_id, "stopped", failed=GONE_STATES) is None:
            return
    utils.forget(ctx.instance, *constants.INSTANCE_NETWORK_PROPERTIES)


@operation(resumable=True)
def terminate(ctx, **_):
    """delete: terminates the instance, waits for termination, forgets it."""
    client = utils.client_for(ctx.node)
    if utils.release_external(
        ctx,
        KIND,
        _external_finder(ctx, client),
        constants.RESERVATION_ID,
        *constants.INSTANCE_NETWORK_PROPERTIES,
    ):
        return

    # shutting-down too: a retry must still wait for an unrecorded instance it terminated.
    instance_ids = _own_instance_ids(ctx, client, LIVE_STATES + ("shutting-down",))
    if not instance_ids:
        ctx.logger.info("No instance was recorded or found for this node instance; there is nothing to terminate.")
    for instance_id in instance_ids:
        terminated = utils.call(ctx, client, "terminate_instances", not_found_ok=True, InstanceIds=[instance_id])
        if terminated is None:
            continue
        ctx.logger.info(f"Terminating instance {instance_id}.")
        if _wait(ctx, client, instance_id, ("terminated", NOT_FOUND)) is None:
            return
    utils.forget(ctx.instance, *RUNTIME_PROPERTIES)


@operation(resumable=True)
def creation_validation(ctx, **_):
    """Checks the image, the type, and any key pair or subnet named in parameters."""
    instance_request.check_external_relationships(ctx)
    client = utils.client_for(ctx.node)
    if utils.use_external(ctx.node):
        instance_id = utils.require_external(ctx, KIND, _external_finder(ctx, client))
        ctx.logger.info(f"External instance {instance_id} exists.")
        return

    request = instance_request.validate(ctx)
    named = utils.resource_id(ctx.node)
    if INSTANCE_ID_PATTERN.match(named) and _find(ctx, client, named):
        raise utils.bad_input(
            ctx,
            "resource_id",
            f"names instance '{named}', which already exists, while use_external_resource is false",
            "set use_external_resource to true to use that instance, or clear resource_id",
        )
    image_id, key_name, subnet_id = request["ImageId"], request.get("KeyName"), request.get("SubnetId")
    images = utils.existing(ctx, client, "describe_images", "Images", ImageIds=[image_id])
    if not images or images[0].get("State", "available") != "available":
        state = images[0]["State"] if images else "not available to this account and region"
        raise utils.bad_input(
            ctx, "image_id", f"names image '{image_id}', which is {state}", "give an available AMI id of this region"
        )
    if key_name and not utils.existing(ctx, client, "describe_key_pairs", "KeyPairs", KeyNames=[key_name]):
        raise utils.bad_input(
            ctx,
            "parameters.key_name",
            f"names key pair '{key_name}', which does not exist",
            "create the key pair first, or connect the instance to a KeyPair node",
        )
    if subnet_id and not utils.existing(ctx, client, "describe_subnets", "Subnets", SubnetIds=[subnet_id]):
        raise utils.bad_input(
            ctx,
            "parameters.subnet_id",
            f"names subnet '{subnet_id}', which does not exist",
            "give the id of an existing subnet, or leave it out for the default VPC",
        )
    ctx.logger.info(f"Instance of {request['InstanceType']} from {image_id} is valid.")


@operation(resumable=True)
def check_status(ctx, **_):
    """Passes when the instance exists and is running; raises otherwise."""
    client = utils.client_for(ctx.node)
    external = utils.use_external(ctx.node)
    instance_id = ctx.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    if not instance_id and external:
        instance_id = utils.resource_id(ctx.node)
        _check_instance_id(ctx, instance_id)
    if not instance_id:
        raise NonRecoverableError(
            f"{utils.node_label(ctx)}: no instance is recorded; it was never created. "
            "Fix: run the install workflow, or the heal workflow for this node instance."
        )
    state = _state(_describe(ctx, client, instance_id))
    if state != "running":
        fix = (
            "start it in AWS, or correct resource_id"
            if external
            else "run the heal workflow to replace it, or run the start operation if it is stopped"
        )
        raise NonRecoverableError(
            f"{utils.node_label(ctx)}: instance {instance_id} is {state}, not running. Fix: {fix}."
        )
    ctx.logger.info(f"Instance {instance_id} is running.")


# --- AWS ------------------------------------------------------------------------


def _run(ctx, client, request: dict) -> tuple[dict, str]:
    """Calls RunInstances. AWS answers a repeated ClientToken with the first
    call's instance; if that one is already gone (a reinstall), a token
    derived from it is used, so the answer stays reproducible."""
    for _attempt in range(5):
        response = utils.call(ctx, client, "run_instances", **request)
        instance = response["Instances"][0]
        if _state(instance) not in GONE_STATES:
            return instance, response.get("ReservationId", "")
        request["ClientToken"] = instance_request.token_from(f"{request['ClientToken']}/{instance['InstanceId']}")
        ctx.logger.info(f"Token matched instance {instance['InstanceId']}, which is gone; launching a new one.")
    raise NonRecoverableError(f"{utils.node_label(ctx)}: RunInstances kept answering with terminated instances.")


def _adopt_own(ctx, client) -> bool:
    """Keeps the recorded instance, or adopts one an interrupted create launched."""
    recorded = ctx.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    if recorded:
        if _state(_describe(ctx, client, recorded)) in LIVE_STATES:
            ctx.logger.info(f"Instance {recorded} was already created for this node instance.")
            return True
        utils.forget(ctx.instance, *RUNTIME_PROPERTIES)
    found = _own_live_instances(ctx, client)
    if not found:
        return False
    instance = found[0]
    utils.record(
        ctx.instance,
        save=True,
        **{constants.AWS_RESOURCE_ID: instance["InstanceId"], constants.RESERVATION_ID: instance["ReservationId"]},
    )
    ctx.logger.warning(f"Adopted instance {instance['InstanceId']}, launched by an interrupted create.")
    return True


def _own_live_instances(ctx, client, states: tuple[str, ...] = LIVE_STATES) -> list[dict]:
    """Instances in ``states`` tagged as this node instance's, oldest first."""
    in_states = [{"Name": "instance-state-name", "Values": list(states)}]
    reservations = utils.find_own(ctx, client, "describe_instances", "Reservations", extra_filters=in_states)
    instances = [
        {**instance, "ReservationId": reservation["ReservationId"]}
        for reservation in reservations
        for instance in reservation["Instances"]
    ]
    return sorted(instances, key=lambda instance: str(instance.get("LaunchTime", "")))


def _own_instance_ids(ctx, client, states: tuple[str, ...] = LIVE_STATES) -> list[str]:
    """The recorded instance, or else the instances in ``states`` tagged as this
    node instance's: an interrupted create may have launched one it never recorded."""
    recorded = ctx.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    if recorded:
        return [str(recorded)]
    return [instance["InstanceId"] for instance in _own_live_instances(ctx, client, states)]


def _describe(ctx, client, instance_id: str) -> dict | None:
    reservations = utils.existing(ctx, client, "describe_instances", "Reservations", InstanceIds=[instance_id])
    instances = [instance for reservation in reservations for instance in reservation["Instances"]]
    return instances[0] if instances else None


def _state(instance: dict | None) -> str:
    return instance["State"]["Name"] if instance else NOT_FOUND


def _find(ctx, client, instance_id: str) -> str | None:
    """The id of an existing, non-terminated instance."""
    return instance_id if _state(_describe(ctx, client, instance_id)) in LIVE_STATES else None


def _check_instance_id(ctx, instance_id: str) -> None:
    """An external resource_id must look like an instance id before AWS is asked."""
    if not INSTANCE_ID_PATTERN.match(instance_id):
        raise utils.bad_input(
            ctx,
            "resource_id",
            f"is {instance_id!r}, not an instance id",
            "give the existing instance's id: 'i-' and 8 or 17 hexadecimal digits, such as i-0123456789abcdef0",
        )


def _external_finder(ctx, client):
    """What the shared external-resource helpers call to find resource_id."""

    def find(wanted: str) -> str | None:
        _check_instance_id(ctx, wanted)
        return _find(ctx, client, wanted)

    return find


def _wait(ctx, client, instance_id: str, wanted, failed=()) -> dict | None:
    """Waits with the shared policy; returns the last describe's instance, or
    None when the operation has asked the workflow to retry."""
    latest: dict[str, Any] = {}

    def poll() -> str:
        latest["instance"] = _describe(ctx, client, instance_id)
        return _state(latest["instance"])

    done = utils.wait_for(ctx, ctx.node, f"instance {instance_id}", poll, wanted, failed)
    return (latest["instance"] or {}) if done else None


def _recorded_id(ctx) -> str:
    instance_id = ctx.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    if not instance_id:
        raise NonRecoverableError(
            f"{utils.node_label(ctx)}: no instance is recorded (runtime property aws_resource_id). "
            "Fix: run the create operation (install) first."
        )
    return instance_id


def _gone(ctx, instance_id: str, state: str = NOT_FOUND) -> NonRecoverableError:
    return NonRecoverableError(
        f"{utils.node_label(ctx)}: instance {instance_id} is {state}. Fix: run the heal workflow "
        "to replace it, or correct resource_id for an external instance."
    )


def _record_addresses(ctx, instance: dict) -> None:
    """Records the four address properties from one describe's instance."""
    utils.record(
        ctx.instance,
        ip=instance.get("PrivateIpAddress"),
        private_dns_name=instance.get("PrivateDnsName"),
        public_dns_name=instance.get("PublicDnsName"),
        public_ip_address=instance.get("PublicIpAddress"),
    )
    ctx.logger.info(
        f"Instance {instance['InstanceId']} is running at {instance.get('PrivateIpAddress')} "
        f"(public {instance.get('PublicIpAddress') or 'none'})."
    )
