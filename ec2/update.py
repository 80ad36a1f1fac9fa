"""In-place update (``cloudify.interfaces.lifecycle.update``): makes a resource
match its node's properties again without replacing it.

A manager's deployment update calls these operations, with the new
blueprint's properties, on node instances whose check_drift found a
difference; ``execute_operation`` calls them directly.

- every type: the ``tags`` property, by CreateTags and DeleteTags (the
  ownership tags, ``aws:`` tags and the generated Name are never touched);
- SecurityGroup: the rules, by authorising the missing ones and revoking
  those the blueprint no longer has (the allow-all egress rules AWS gives a
  new group are kept unless the blueprint has them);
- Instance: the instance type, by stop, ModifyInstanceAttribute and start (an
  instance that was stopped stays stopped).

What needs a replacement (another image, key pair, group name or
description) fails with a ``Fix:``; a deployment update then reinstalls the
node instance. External resources are left as they are.
"""

from __future__ import annotations

from ec2 import aws, connection, drift, instance_request, ownership, securitygroup, utils
from ec2 import instance as instance_lifecycle
from ec2.aws import GONE_STATES, NOT_FOUND, state_of
from ec2.errors import PluginError

# Runtime property set while an instance is stopped for a new type: it is started again after.
RESTART_AFTER_RESIZE = "restart_after_resize"


# --- operations -------------------------------------------------------------


@utils.ec2_operation
def instance(ctx, **_):
    spec = instance_request.parse(ctx.node.properties)
    if _external(ctx.logger.info, spec.common):
        return
    client = connection.ec2_client(spec.common.aws_config)
    instance_id = ownership.require_recorded(ctx.instance.runtime_properties, "instance")
    described = aws.find_instance(client, instance_id)
    state = state_of(described)
    if state == NOT_FOUND or state in GONE_STATES:
        raise PluginError(f"instance {instance_id} is {state}. Fix: run the heal workflow to replace it")
    request = drift.expected_request(instance_request.read(ctx), spec)
    for prop, field in (("image_id", "ImageId"), ("key pair", "KeyName")):
        if described.get(field) != request.get(field):
            raise PluginError(
                f"{prop} changed from {described.get(field)!r} to {request.get(field)!r}, which needs a new instance. "
                "Fix: reinstall this node instance"
            )
    wanted_tags = drift.wanted_instance_tags(request, spec.common.tags)
    _update_tags(ctx.logger.info, client, instance_id, aws.tags_of(described), wanted_tags)
    _resize(ctx.instance, ctx.logger.info, client, spec.common, described, request["InstanceType"])


@utils.ec2_operation
def security_group(ctx, **_):
    node = utils.node_facts(ctx, with_targets=True)  # a source group a target made a moment ago
    spec = securitygroup.parse(node)
    if _external(ctx.logger.info, spec.common):
        return
    client = connection.ec2_client(spec.common.aws_config)
    group_id = ownership.require_recorded(ctx.instance.runtime_properties, "security group")
    group = aws.find_security_group_by_id(client, group_id)
    if not group:
        raise PluginError(f"security group {group_id} no longer exists. Fix: reinstall this node instance")
    for prop, wanted, actual in (
        ("resource_id", spec.name, group.get("GroupName")),
        ("description", spec.description, group.get("Description")),
    ):
        if wanted != actual:
            raise PluginError(
                f"{prop} changed from {actual!r} to {wanted!r}, which needs a new group. "
                "Fix: reinstall this node instance"
            )
    resolved = securitygroup.resolve_rules(client, spec, node.targets_fresh_for(spec.common.propagation))
    for direction, (actual, wanted) in drift.rule_sets(group, *resolved).items():
        _update_rules(ctx.logger.info, client, group_id, direction, actual, wanted)
    _update_tags(ctx.logger.info, client, group_id, aws.tags_of(group), spec.common.tags)


@utils.ec2_operation
def key_pair(ctx, **_):
    common = utils.parse_common(ctx.node.properties)
    if _external(ctx.logger.info, common):
        return
    client = connection.ec2_client(common.aws_config)
    name = ownership.require_recorded(ctx.instance.runtime_properties, "key pair")
    found = aws.find_key_pair(client, name)
    if not found:
        raise PluginError(f"key pair {name} no longer exists. Fix: reinstall this node instance")
    _update_tags(ctx.logger.info, client, found["KeyPairId"], aws.tags_of(found), common.tags)


@utils.ec2_operation
def elastic_ip(ctx, **_):
    common = utils.parse_common(ctx.node.properties)
    if _external(ctx.logger.info, common):
        return
    client = connection.ec2_client(common.aws_config)
    public_ip = ownership.require_recorded(ctx.instance.runtime_properties, "elastic IP")
    address = ownership.recorded_address(client, ctx.instance.runtime_properties)
    if not address:
        raise PluginError(f"elastic IP {public_ip} no longer exists. Fix: reinstall this node instance")
    _update_tags(ctx.logger.info, client, address["AllocationId"], aws.tags_of(address), common.tags)


# --- helpers ------------------------------------------------------------------


def _external(report: ownership.Report, common: utils.Common) -> bool:
    if common.external:
        report("External resource: left as it is.")
    return common.external


def _update_tags(
    report: ownership.Report, client, resource_id: str, actual: dict[str, str], wanted: dict[str, str]
) -> None:
    to_set, to_delete = drift.tag_changes(actual, wanted)
    aws.create_tags(client, resource_id, to_set)
    aws.delete_tags(client, resource_id, to_delete)
    if to_set or to_delete:
        report(f"Tags of {resource_id}: set {sorted(to_set)}, removed {to_delete}.")


def _update_rules(report: ownership.Report, client, group_id: str, direction: str, actual: set, wanted: set) -> None:
    """Authorises the missing rules first, then revokes the extra ones: no moment without both."""
    egress = direction == "egress"
    missing, extra = sorted(wanted - actual, key=str), sorted(actual - wanted, key=str)
    if missing:
        aws.authorize(client, group_id, [drift.permission_of(rule) for rule in missing], egress=egress)
    if extra:
        aws.revoke(client, group_id, [drift.permission_of(rule) for rule in extra], egress=egress)
    if missing or extra:
        report(f"Security group {group_id}: {len(missing)} {direction} rule(s) added, {len(extra)} revoked.")


def _resize(
    node_instance, report: ownership.Report, client, common: utils.Common, described: dict, wanted_type: str
) -> None:
    """Stop, change the type, start. Rerun after a retry, it goes on where it was."""
    instance_id = described["InstanceId"]
    if described.get("InstanceType") != wanted_type:
        state = state_of(described)
        if state != "stopped":
            utils.record(node_instance, save=True, **{RESTART_AFTER_RESIZE: True})
            if state != "stopping":
                aws.stop_instance(client, instance_id)
                report(f"Stopping instance {instance_id} to change its type to {wanted_type}.")
            instance_lifecycle.wait_for_state(report, aws.wait_stopped, client, common, instance_id)
        aws.modify_instance_type(client, instance_id, wanted_type)
        report(f"Instance {instance_id} is now of type {wanted_type}.")
    if node_instance.runtime_properties.get(RESTART_AFTER_RESIZE):
        if state_of(aws.find_instance(client, instance_id)) == "stopped":
            aws.start_instance(client, instance_id)
            report(f"Starting instance {instance_id} again.")
        running = instance_lifecycle.wait_for_state(report, aws.wait_started, client, common, instance_id)
        instance_lifecycle.record_addresses(node_instance, running, report)
        utils.forget(node_instance, RESTART_AFTER_RESIZE, save=True)
