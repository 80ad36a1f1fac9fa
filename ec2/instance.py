"""cloudify.aws.nodes.Instance: an EC2 instance through its whole lifecycle.

create (``run_instances``): parse the properties and build one RunInstances
request (``ec2.instance_request``), keep an instance this node instance
already owns, else run one with a stable ``ClientToken`` and record its id at
once. start: start it if stopped, wait until running, record its addresses.
stop: stop it, wait, forget the addresses. delete (``terminate``): terminate
it, wait, forget everything. An external instance is only checked and recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ec2 import agent, aws, connection, constants, deployment, errors, instance_request, keypair, ownership, utils
from ec2.aws import GONE_STATES, LIVE_STATES, NOT_FOUND, state_of
from ec2.constants import KEY_PAIR, SECURITY_GROUP
from ec2.errors import BadInput, NotReady, PluginError
from ec2.properties import as_text

KIND = "instance"

# Every runtime property this module sets; delete pops them all.
RUNTIME_PROPERTIES = (
    constants.AWS_RESOURCE_ID,
    constants.EXTERNAL_RESOURCE,
    constants.RESERVATION_ID,
    constants.CREATE_STARTED,
    constants.CREATED_AT,
    constants.CREATE_RESENT,
    *constants.INSTANCE_NETWORK_PROPERTIES,
    "restart_after_resize",  # set by ec2.update while it changes the instance type
)

# --- operations -------------------------------------------------------------


@utils.ec2_operation
def run_instances(ctx, **_):
    """create: runs one instance, or keeps the one this node instance owns."""
    known = instance_request.read(ctx)
    instance_request.check_external_relationships(known, ctx.logger)
    spec = instance_request.parse(known.properties)
    client = connection.ec2_client(spec.common.aws_config)
    if spec.common.external:
        utils.adopt_external(ctx.instance, ctx.logger.info, spec.common, KIND, lambda wanted: _find(client, wanted))
        return

    # The key pair and groups may have been made a moment ago, and be unknown to EC2 for a while.
    window = spec.common.propagation
    resolved = instance_request.resolve_security_groups(client, spec, known.targets_fresh_for(window))
    request = instance_request.build_request(known, resolved)
    if _keep_own(client, ctx.instance, known.ownership, window, ctx.logger):
        return
    utils.mark_create_started(ctx.instance)
    fresh_for = known.targets_fresh_for(window)
    instance, reservation_id = _run(client, ctx.instance, request, ctx.logger.info, fresh_for)
    instance_id = instance["InstanceId"]
    utils.record(
        ctx.instance,
        save=True,
        **{
            constants.AWS_RESOURCE_ID: instance_id,
            constants.RESERVATION_ID: reservation_id,
            constants.CREATED_AT: utils.now(),
        },
    )
    ctx.logger.info(f"Launched instance {instance_id} (reservation {reservation_id}) from {request['ImageId']}.")
    resent = ctx.instance.runtime_properties.get(constants.CREATE_RESENT)
    if resent and _terminate_others(client, known.ownership, instance_id, spec.common.propagation, ctx.logger.warning):
        utils.forget(ctx.instance, constants.CREATE_RESENT, save=True)


@utils.ec2_operation
def start(ctx, **_):
    """Starts the instance if it is stopped, waits until it runs, records its addresses."""
    spec = instance_request.parse(ctx.node.properties)
    client = connection.ec2_client(spec.common.aws_config)
    instance_id = ownership.require_recorded(
        ctx.instance.runtime_properties, KIND, "run the create operation (install) first"
    )
    instance_request.check_recorded_id(instance_id)
    # EC2 is eventually consistent: an instance launched a moment ago may not be visible yet.
    fresh_for = utils.fresh_for(ctx.instance.runtime_properties, spec.common.propagation)
    instance = aws.poll_visible_instance(client, instance_id, fresh_for)
    state = state_of(instance)
    if state in GONE_STATES + (NOT_FOUND,):
        raise _gone(instance_id, state)
    if spec.common.external:
        record_addresses(ctx.instance, instance or {}, ctx.logger.info)
        return

    if state == "stopping":
        instance = wait_for_state(ctx.logger.info, aws.wait_stopped, client, spec.common, instance_id, state)
        state = state_of(instance)
    if state == "stopped":
        state = aws.start_instance(client, instance_id) or NOT_FOUND
        ctx.logger.info(f"Starting instance {instance_id}.")
        known = None if state == "running" else state  # the addresses need a describe of the running instance
        instance = wait_for_state(ctx.logger.info, aws.wait_started, client, spec.common, instance_id, known)
    elif state != "running":
        instance = wait_for_state(ctx.logger.info, aws.wait_running, client, spec.common, instance_id, state)
    record_addresses(ctx.instance, instance or {}, ctx.logger.info)


@utils.ec2_operation
def stop(ctx, **_):
    """Stops the instance, waits until it is stopped, forgets its addresses.

    With no instance recorded (a failed or interrupted install), it stops the
    live instances tagged as this node instance's, if any, and otherwise only
    logs: uninstall must get through after any failed install.
    """
    common = utils.common_if_created(ctx.node.properties, ctx.instance.runtime_properties, KIND, ctx.logger.info)
    if common is None:
        return
    if common.external:
        utils.forget(ctx.instance, *constants.INSTANCE_NETWORK_PROPERTIES)
        ctx.logger.info("External instance: addresses forgotten; the instance is left as it is.")
        return
    if getattr(ctx, "workflow_id", None) == "uninstall":
        ctx.logger.info("Not stopping: uninstall terminates the instance next, which shuts it down anyway.")
        return
    client = connection.ec2_client(common.aws_config)
    owner = ownership.owner_tags(ctx.deployment.id, ctx.instance.id)
    instance_ids = _own_instance_ids(client, ctx.instance.runtime_properties, owner)
    if not instance_ids:
        ctx.logger.info("No instance was recorded or found for this node instance; there is nothing to stop.")
    fresh_for = utils.fresh_for(ctx.instance.runtime_properties, common.propagation)
    for instance_id in instance_ids:
        try:
            state = aws.stop_instance(client, instance_id, fresh_for) or NOT_FOUND
        except NotReady:  # not stoppable now: gone for good, or between states
            state = state_of(aws.find_instance(client, instance_id))
            if state not in GONE_STATES + (NOT_FOUND,):
                raise
        if state in GONE_STATES + (NOT_FOUND,):
            ctx.logger.warning(f"Instance {instance_id} is {state}; there is nothing to stop.")
            continue
        ctx.logger.info(f"Stopping instance {instance_id}.")
        wait_for_state(ctx.logger.info, aws.wait_stopped, client, common, instance_id, state)
    utils.forget(ctx.instance, *constants.INSTANCE_NETWORK_PROPERTIES)


@utils.ec2_operation
def terminate(ctx, **_):
    """delete: terminates the instance, waits for termination, forgets it."""
    common = utils.common_if_created(ctx.node.properties, ctx.instance.runtime_properties, KIND, ctx.logger.info)
    if common is None:
        return
    client = connection.ec2_client(common.aws_config)
    if common.external:
        utils.release_external(
            ctx.instance,
            ctx.logger.info,
            common,
            KIND,
            lambda wanted: _find(client, wanted),
            constants.RESERVATION_ID,
            *constants.INSTANCE_NETWORK_PROPERTIES,
        )
        return

    # shutting-down too: a retry must still wait for an unrecorded instance it terminated.
    owner = ownership.owner_tags(ctx.deployment.id, ctx.instance.id)
    instance_ids = _own_instance_ids(client, ctx.instance.runtime_properties, owner, LIVE_STATES + ("shutting-down",))
    if not instance_ids:
        ctx.logger.info("No instance was recorded or found for this node instance; there is nothing to terminate.")
    fresh_for = utils.fresh_for(ctx.instance.runtime_properties, common.propagation)
    for instance_id in instance_ids:
        state = aws.terminate_instance(client, instance_id, fresh_for)
        if state is None:
            continue
        ctx.logger.info(f"Terminating instance {instance_id}.")
        wait_for_state(ctx.logger.info, aws.wait_terminated, client, common, instance_id, state)
    utils.forget(ctx.instance, *RUNTIME_PROPERTIES)


@utils.ec2_operation
def creation_validation(ctx, **_):
    check(instance_request.read(ctx, validating=True), ctx.logger, honour_launch_dry_run=True)
    deployment.check_deployment_quotas(ctx)


def check(known: instance_request.InstanceContext, logger, honour_launch_dry_run: bool = False) -> None:
    """validation.create's checks (the image, the type, any key pair, subnet or security group named in
    parameters, AWS's dry run), plain: the aws_preflight workflow runs them too. The dry run is left out
    when ``honour_launch_dry_run`` (validation.create) and the node's launch_dry_run is false; the
    aws_preflight workflow always makes it."""
    instance_request.check_external_relationships(known, logger)
    spec = instance_request.parse(known.properties)
    client = connection.ec2_client(spec.common.aws_config)
    if spec.common.external:
        instance_id = utils.require_external(spec.common, KIND, lambda wanted: _find(client, wanted))
        logger.info(f"External instance {instance_id} exists.")
        return

    named = spec.common.resource_id
    if constants.INSTANCE_ID_PATTERN.match(named) and _find(client, named):
        raise BadInput(
            "resource_id",
            f"names instance '{named}', which already exists, while use_external_resource is false",
            "set use_external_resource to true to use that instance, or clear resource_id",
        )
    fields = spec.fields
    # A key pair or group named in parameters may be a target's, made a moment ago.
    window = spec.common.propagation
    _check_agent_install(known, logger, has_key_pair=bool(fields.get("KeyName")))
    image = aws.find_image(client, fields["ImageId"])
    if not image or image.get("State", "available") != "available":
        state = image["State"] if image else "not available to this account and region"
        raise BadInput(
            "image_id",
            f"names image '{fields['ImageId']}', which is {state}",
            "give an available AMI id of this region",
        )
    if fields.get("KeyName") and not aws.find_key_pair(client, fields["KeyName"], known.targets_fresh_for(window)):
        raise BadInput(
            "parameters.key_name",
            f"names key pair '{fields['KeyName']}', which does not exist",
            "create the key pair first, or connect the instance to a KeyPair node",
        )
    if fields.get("SubnetId") and not aws.subnet_exists(client, fields["SubnetId"]):
        raise BadInput(
            "parameters.subnet_id",
            f"names subnet '{fields['SubnetId']}', which does not exist",
            "give the id of an existing subnet, or leave it out for the default VPC",
        )
    resolved = instance_request.resolve_security_groups(client, spec, known.targets_fresh_for(window))
    if honour_launch_dry_run and not spec.launch_dry_run:
        logger.info(
            f"{known.label}: launch_dry_run is false, so no RunInstances dry run; create's own request is AWS's check."
        )
    else:
        dry_run_instance(known, logger, client, resolved)
    logger.info(f"Instance of {fields['InstanceType']} from {fields['ImageId']} is valid.")


def _check_agent_install(known: instance_request.InstanceContext, logger, has_key_pair: bool) -> None:
    """Refuses, or warns about, an agent install that cannot succeed (see ec2/agent.py)."""
    refusal, warning = agent.verdict(
        known.properties,
        local=known.local,
        workflow=known.workflow,
        installs_agent=known.installs_agent,
        has_key_pair=has_key_pair
        or bool(known.related(instance_request.KEYPAIR_RELATIONSHIP))
        or bool(known.provider_resources.get("agents_keypair")),
    )
    if refusal:
        raise PluginError(refusal)
    if warning:
        logger.warning(f"{known.label}: {warning}")


@utils.ec2_operation
def check_status(ctx, **_):
    """Passes when the instance exists and is running; raises otherwise."""
    spec = instance_request.parse(ctx.node.properties)
    client = connection.ec2_client(spec.common.aws_config)
    instance_id = ctx.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    if not instance_id and spec.common.external:
        instance_id = spec.common.resource_id
    if not instance_id:
        raise PluginError(
            "no instance is recorded; it was never created. "
            "Fix: run the install workflow, or the heal workflow for this node instance"
        )
    state = state_of(aws.find_instance(client, instance_id))
    if state != "running":
        fix = (
            "start it in AWS, or correct resource_id"
            if spec.common.external
            else "run the heal workflow to replace it, or run the start operation if it is stopped"
        )
        raise PluginError(f"instance {instance_id} is {state}, not running. Fix: {fix}")
    ctx.logger.info(f"Instance {instance_id} is running.")


# --- the dry run ------------------------------------------------------------------

# Stands in for a key pair or group not created yet; left out of the dry run's request.
PLACEHOLDER = "preflight-placeholder:{node}"
# RunInstances refusals by the property they are about, with the fix.
RUN_INSTANCES_PROPERTIES = {
    "InvalidAMIID.NotFound": ("image_id", "give an available AMI id of this region"),
    "InvalidAMIID.Malformed": ("image_id", "give an available AMI id of this region"),
    "InvalidAMIID.Unavailable": ("image_id", "give an available AMI id of this region"),
    "InvalidKeyPair.NotFound": ("parameters.key_name", "name an existing key pair, or connect a KeyPair node"),
    "InvalidSubnetID.NotFound": ("parameters.subnet_id", "give an existing subnet's id"),
    "InvalidGroup.NotFound": ("parameters.security_group_ids", "give existing security groups of the subnet's VPC"),
    "Unsupported": ("instance_type", "choose a type that this zone offers, or another placement"),
}


def dry_run_instance(known: instance_request.InstanceContext, logger, client, spec) -> None:
    """RunInstances with DryRun: the request create would send, without the
    ClientToken, and without a connected key pair or group that does not exist
    yet (validation run before install: the preflight, or the classic hook)."""
    if spec.common.external:
        return
    known = _with_stand_ins(known)
    placeholders = {target.aws_id for target in known.targets if target.placeholder}
    request = instance_request.build_request(known, spec)
    if request.get("KeyName") in placeholders:
        del request["KeyName"]
    groups = [group for group in request.get("SecurityGroupIds", []) if group not in placeholders]
    request.pop("SecurityGroupIds", None)
    if groups:
        request["SecurityGroupIds"] = groups
    # A key pair or group this deployment made a moment ago may be unknown to EC2 for a while.
    # Once per node and request shape in this process (instance_request.dry_run_launch).
    refusal = instance_request.dry_run_launch(
        known, logger, client, request, known.targets_fresh_for(spec.common.propagation)
    )
    if refusal is not None:
        prop, fix = RUN_INSTANCES_PROPERTIES.get(
            errors.error_code(refusal), ("parameters", "correct the value AWS names")
        )
        errors.check_dry_run("RunInstances", refusal, prop, fix)


def _with_stand_ins(known: instance_request.InstanceContext) -> instance_request.InstanceContext:
    """``known`` with an id standing in for each key pair or security group
    target not created yet (see ``_stand_in``)."""
    targets = []
    for target in known.targets:
        stand_in = None if target.aws_id else _stand_in(target, known.deployment_id)
        if stand_in:
            target = replace(target, aws_id=stand_in[0], placeholder=stand_in[1])
        targets.append(target)
    return replace(known, targets=tuple(targets))


def _stand_in(target: instance_request.Target, deployment_id: str) -> tuple[str, bool] | None:
    """(id, is a placeholder) for a key pair or security group not created yet:
    an external one's resource_id, else the name a new key pair will get or a
    placeholder for a new group."""
    properties = target.properties
    external = bool(target.node_type) and utils.use_external(target)
    wanted = as_text(properties.get("resource_id"))
    if target.node_type == KEY_PAIR:
        if external and wanted:
            return wanted, False
        try:
            name = keypair.parse(properties, utils.generated_name(deployment_id, target.instance_id)).key_name
        except PluginError:  # reported by the key pair's own validation
            name = PLACEHOLDER.format(node=target.node_id)
        return name, True
    if target.node_type == SECURITY_GROUP:
        if external and constants.GROUP_ID_PATTERN.match(wanted):
            return wanted, False
        return PLACEHOLDER.format(node=target.node_id), True
    return None


# --- AWS ------------------------------------------------------------------------


def _run(client, instance, request: dict, report, fresh_for: float = 0.0) -> tuple[dict, str]:
    """Calls RunInstances. AWS answers a repeated ClientToken with the first
    call's instance; if that one is already gone (a reinstall), a token
    derived from it is used, so the answer stays reproducible. A call that
    botocore had to resend is noted on the node instance: where the token was
    not honoured, it may have launched a second instance."""
    for _attempt in range(5):
        response = aws.run_instance(client, request, fresh_for)
        if aws.resent(response):
            utils.record(instance, save=True, **{constants.CREATE_RESENT: True})
        launched = response["Instances"][0]
        if state_of(launched) not in GONE_STATES:
            return launched, response.get("ReservationId", "")
        request["ClientToken"] = instance_request.token_from(f"{request['ClientToken']}/{launched['InstanceId']}")
        report(f"Token matched instance {launched['InstanceId']}, which is gone; launching a new one.")
    raise PluginError("RunInstances kept answering with terminated instances")


def _terminate_others(client, owner: dict[str, str], kept: str, window: float, warn) -> bool:
    """After a resent RunInstances: terminates every other instance tagged as
    this node instance's (launched a moment ago: EC2 may not know them by id
    yet). False when the listing by tag never caught up, and terminate must
    sweep instead."""

    def terminate(other: dict) -> None:
        aws.terminate_instance(client, other["InstanceId"], fresh_for=window)
        warn(f"Terminated instance {other['InstanceId']}, a duplicate launched by a resent call.")

    return (
        ownership.sweep_others(lambda: aws.find_owned_instances(client, owner), "InstanceId", kept, terminate, window)
        is not None
    )


def _keep_own(client, instance, owner: dict[str, str], window: float, logger) -> bool:
    """Keeps the recorded instance (also one launched too recently for EC2 to
    show it), or adopts one an interrupted create launched."""
    properties = instance.runtime_properties
    recorded = ownership.recorded(properties)
    if recorded:
        state = state_of(aws.find_instance(client, recorded))
        if state in LIVE_STATES or (state == NOT_FOUND and utils.fresh_for(properties, window)):
            logger.info(f"Instance {recorded} was already created for this node instance.")
            return True
        utils.forget(instance, *RUNTIME_PROPERTIES)
    found = ownership.left_behind(properties, lambda: aws.find_owned_instances(client, owner))
    if not found:
        return False
    adopted = found[0]
    utils.record(
        instance,
        save=True,
        **{constants.AWS_RESOURCE_ID: adopted["InstanceId"], constants.RESERVATION_ID: adopted["ReservationId"]},
    )
    logger.warning(f"Adopted instance {adopted['InstanceId']}, launched by an interrupted create.")
    return True


def _own_instance_ids(
    client, properties: Mapping[str, Any], owner: dict[str, str], states: tuple[str, ...] = LIVE_STATES
) -> list[str]:
    """The recorded instance; and the instances in ``states`` tagged as this
    node instance's when it may own one it never recorded (an interrupted
    create) or a duplicate (a resent RunInstances)."""
    recorded = ownership.recorded(properties)
    if recorded:
        instance_request.check_recorded_id(recorded)
    return ownership.recorded_or_owned(
        str(recorded) if recorded else None,
        lambda: [found["InstanceId"] for found in aws.find_owned_instances(client, owner, states)],
        also_owned=bool(properties.get(constants.CREATE_RESENT)),
    )


def _find(client, instance_id: str) -> str | None:
    """The id of an existing, non-terminated instance."""
    return instance_id if state_of(aws.find_instance(client, instance_id)) in LIVE_STATES else None


def wait_for_state(
    report: ownership.Report, wait_until, client, common: utils.Common, instance_id: str, known_state=None
) -> dict:
    """One of aws's named waits (``aws.wait_running``, ...), with the node's
    waiting properties, reporting each poll."""
    return wait_until(client, instance_id, common.wait.timeout, common.wait.interval, report, known_state)


def _gone(instance_id: str, state: str) -> PluginError:
    return PluginError(
        f"instance {instance_id} is {state}. Fix: run the heal workflow "
        "to replace it, or correct resource_id for an external instance"
    )


def record_addresses(node_instance, instance: dict, report: ownership.Report) -> None:
    """Records the four address properties from one describe's instance on the node instance."""
    utils.record(
        node_instance,
        ip=instance.get("PrivateIpAddress"),
        private_dns_name=instance.get("PrivateDnsName"),
        public_dns_name=instance.get("PublicDnsName"),
        public_ip_address=instance.get("PublicIpAddress"),
    )
    report(
        f"Instance {instance.get('InstanceId')} is running at {instance.get('PrivateIpAddress')} "
        f"(public {instance.get('PublicIpAddress') or 'none'})."
    )
