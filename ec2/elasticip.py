"""cloudify.aws.nodes.ElasticIP and the instance_connected_to_elastic_ip relationship.

allocate: parse the properties, adopt an address an interrupted earlier run
allocated (found by its ownership tags) or allocate a VPC address with the
tags inline, record the public IP as ``aws_resource_id`` and the
``allocation_id``. release: release it (retrying while it is still
associated), pop the runtime properties.

associate / disassociate (source: the instance, target: the address): tie the
address to the instance, or untie it only while it is still tied to this
instance; the instance's ``public_ip_address`` follows, as in the classic
plugin. When both ends are external, only runtime properties change. An
address recorded by the classic plugin (its public IP only) is found by that IP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ec2 import aws, connection, constants, deployment, errors, ownership, utils
from ec2.constants import ALLOCATION_ID_PATTERN
from ec2.errors import BadInput, PluginError

KIND = "elastic IP"
ADDRESS_PROPERTIES = (
    constants.ALLOCATION_ID,
    constants.ASSOCIATION_ID,
    constants.ASSOCIATED_INSTANCE_ID,
    constants.ASSOCIATED_AT,
)


@dataclass(frozen=True)
class ElasticIPSpec:
    common: utils.Common


# --- operations -------------------------------------------------------------


@utils.ec2_operation
def allocate(ctx, **_):
    spec = parse(ctx.node.properties)
    client = connection.ec2_client(spec.common.aws_config)
    if spec.common.external:
        address = _require_external(client, spec)
        utils.adopt_external(ctx.instance, ctx.logger.info, spec.common, KIND, lambda _: address["PublicIp"])
        utils.record(ctx.instance, **{constants.ALLOCATION_ID: address["AllocationId"]})
        return

    owner = ownership.owner_tags(ctx.deployment.id, ctx.instance.id)
    owned = ownership.left_behind(ctx.instance.runtime_properties, lambda: aws.find_owned_addresses(client, owner))
    if owned:
        address = owned[0]
        ctx.logger.warning(
            f"Adopting elastic IP {address['PublicIp']} ({address['AllocationId']}), allocated for this "
            "node instance by an earlier, interrupted run."
        )
    else:
        if spec.common.resource_id:
            ctx.logger.warning(
                f"resource_id {spec.common.resource_id} is ignored for a new address: AWS chooses the IP."
            )
        utils.mark_create_started(ctx.instance)
        address = aws.allocate_address(client, ownership.creation_tags(owner, spec.common.tags))
        ctx.logger.info(f"Allocated elastic IP {address['PublicIp']} ({address['AllocationId']}).")
    # An adopted address keeps the time its interrupted create recorded.
    created = {} if owned else {constants.CREATED_AT: utils.now()}
    utils.record(
        ctx.instance,
        save=True,
        **{constants.AWS_RESOURCE_ID: address["PublicIp"], constants.ALLOCATION_ID: address["AllocationId"], **created},
    )
    if aws.resent(address) or len(owned) > 1:
        utils.record(ctx.instance, save=True, **{constants.CREATE_RESENT: True})
        if _release_others(client, owner, address["AllocationId"], spec.common.propagation, ctx.logger.warning):
            utils.forget(ctx.instance, constants.CREATE_RESENT, save=True)


@utils.ec2_operation
def release(ctx, **_):
    common = utils.common_if_created(ctx.node.properties, ctx.instance.runtime_properties, KIND, ctx.logger.info)
    if common is None:
        return
    client = connection.ec2_client(common.aws_config)
    if common.external:
        utils.release_external(ctx.instance, ctx.logger.info, common, KIND, lambda wanted: _public_ip(client, wanted))
        utils.forget(ctx.instance, *ADDRESS_PROPERTIES)
        return
    # Allocated a moment ago, or disassociated a moment ago: EC2 may not have caught up.
    fresh_for = utils.fresh_for(ctx.instance.runtime_properties, common.propagation)
    owner = ownership.owner_tags(ctx.deployment.id, ctx.instance.id)
    for allocation_id, public_ip in _own_addresses(client, ctx.instance.runtime_properties, owner):
        if aws.release_address(client, allocation_id, fresh_for, in_use_for=common.propagation):
            ctx.logger.info(f"Released elastic IP {public_ip} ({allocation_id}).")
        else:
            ctx.logger.info(f"Elastic IP {public_ip} ({allocation_id}) was already released.")
    utils.forget(
        ctx.instance,
        constants.AWS_RESOURCE_ID,
        constants.CREATE_STARTED,
        constants.CREATED_AT,
        constants.CREATE_RESENT,
        *ADDRESS_PROPERTIES,
    )


@utils.ec2_operation
def creation_validation(ctx, **_):
    check(utils.node_facts(ctx), ctx.logger.info)
    deployment.check_deployment_quotas(ctx)


def check(node: utils.NodeFacts, report: ownership.Report) -> None:
    """validation.create's checks, plain: the aws_preflight workflow runs them too."""
    spec = parse(node.properties)
    client = connection.ec2_client(spec.common.aws_config)
    utils.check_existence(spec.common, KIND, lambda wanted: _public_ip(client, wanted), spec.common.resource_id)
    dry_run_elastic_ip(client, spec, node.owner)
    report(f"Elastic IP {spec.common.resource_id or '(new)'} is valid.")


@utils.ec2_operation
def associate(ctx, **_):
    """Relationship establish: ties the target address to the source instance."""
    source, target = ctx.source, ctx.target
    instance_id, public_ip = _ends(source.node.id, source.instance, target.node.id, target.instance)
    if utils.use_external(source.node) and utils.use_external(target.node):
        utils.record(target.instance, **{constants.ASSOCIATED_INSTANCE_ID: instance_id})
        utils.record(source.instance, public_ip_address=public_ip)
        ctx.logger.info(
            f"Instance {instance_id} and elastic IP {public_ip} are both external: runtime properties set, "
            "no association made."
        )
        return

    common = utils.parse_common(target.node.properties)
    client = connection.ec2_client(common.aws_config)
    allocation_id = _allocation_id(client, target.instance.runtime_properties, target.node.id)
    # Either end may have been made a moment ago, and be unknown to EC2 for a while.
    fresh_for = max(
        utils.fresh_for(source.instance.runtime_properties, common.propagation),
        utils.fresh_for(target.instance.runtime_properties, common.propagation),
    )
    association_id = aws.associate_address(client, allocation_id, instance_id, fresh_for)
    utils.record(
        target.instance,
        **{
            constants.ALLOCATION_ID: allocation_id,
            constants.ASSOCIATION_ID: association_id,
            constants.ASSOCIATED_INSTANCE_ID: instance_id,
            constants.ASSOCIATED_AT: utils.now(),
        },
    )
    utils.record(source.instance, public_ip_address=public_ip)
    ctx.logger.info(f"Associated elastic IP {public_ip} with instance {instance_id} ({association_id}).")


@utils.ec2_operation
def disassociate(ctx, **_):
    """Relationship unlink: unties the address, only while it is still tied to this instance."""
    source, target = ctx.source, ctx.target
    if not (
        ownership.recorded(source.instance.runtime_properties)
        and ownership.recorded(target.instance.runtime_properties)
    ):
        ctx.logger.info("The instance or the elastic IP was never created; nothing to disassociate.")
        utils.forget(
            target.instance, constants.ASSOCIATION_ID, constants.ASSOCIATED_INSTANCE_ID, constants.ASSOCIATED_AT
        )
        return
    instance_id, public_ip = _ends(source.node.id, source.instance, target.node.id, target.instance)
    if utils.use_external(source.node) and utils.use_external(target.node):
        utils.forget(target.instance, constants.ASSOCIATED_INSTANCE_ID)
        utils.forget(source.instance, "public_ip_address")
        ctx.logger.info(
            f"Instance {instance_id} and elastic IP {public_ip} are both external: runtime properties unset."
        )
        return

    common = utils.parse_common(target.node.properties)
    client = connection.ec2_client(common.aws_config)
    association_id = target.instance.runtime_properties.get(constants.ASSOCIATION_ID)
    if not association_id:  # recorded by the classic plugin: ask AWS what the address is tied to
        address = aws.find_address(client, public_ip=public_ip) or {}
        association_id = address.get("AssociationId") if address.get("InstanceId") == instance_id else None
    # A recorded association that no longer exists (the address was moved or
    # untied) is left alone; one made a moment ago may only be unknown to EC2 yet.
    fresh_for = utils.fresh_for(target.instance.runtime_properties, common.propagation, constants.ASSOCIATED_AT)
    if association_id and aws.disassociate_address(client, association_id, fresh_for):
        ctx.logger.info(f"Disassociated elastic IP {public_ip} from instance {instance_id}.")
    else:
        ctx.logger.info(f"Elastic IP {public_ip} is no longer tied to instance {instance_id}; nothing to disassociate.")
    utils.forget(target.instance, constants.ASSOCIATION_ID, constants.ASSOCIATED_INSTANCE_ID, constants.ASSOCIATED_AT)
    if source.instance.runtime_properties.get("public_ip_address") == public_ip:
        utils.forget(source.instance, "public_ip_address")


def dry_run_elastic_ip(client, spec: ElasticIPSpec, owner: dict[str, str]) -> None:
    """AllocateAddress with DryRun, for a new address."""
    if spec.common.external:
        return
    refusal = aws.dry_run_allocate_address(client, ownership.creation_tags(owner, spec.common.tags))
    errors.check_dry_run("AllocateAddress", refusal, "tags", "correct the tags")


# --- properties -------------------------------------------------------------


def parse(properties: Mapping[str, Any]) -> ElasticIPSpec:
    """The ElasticIP properties, checked without calling AWS."""
    common = utils.parse_common(properties)
    wanted = common.resource_id
    if wanted and not (ALLOCATION_ID_PATTERN.match(wanted) or _is_ipv4(wanted)):
        raise BadInput(
            "resource_id",
            f"is {wanted!r}, neither a public IPv4 address nor an allocation id",
            "give an address such as 203.0.113.10 or an id such as eipalloc-0123abcd",
        )
    return ElasticIPSpec(common)


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def _ends(instance_node: str, instance, address_node: str, address) -> tuple[str, str]:
    """(instance id, public IP) recorded on a relationship's two node instances (the
    source, an instance of node ``instance_node``; the target, an address of ``address_node``)."""
    instance_id = instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    public_ip = address.runtime_properties.get(constants.AWS_RESOURCE_ID)
    if not instance_id:
        raise PluginError(
            f"instance '{instance_node}' has no aws_resource_id. "
            "Fix: create the instance before connecting it to the elastic IP"
        )
    if not public_ip:
        raise PluginError(
            f"elastic IP '{address_node}' has no aws_resource_id. "
            "Fix: create the elastic IP before connecting an instance to it"
        )
    return instance_id, public_ip


# --- AWS ------------------------------------------------------------------------


def _lookup(client, wanted: str) -> dict | None:
    """An address by allocation id or public IP."""
    if ALLOCATION_ID_PATTERN.match(wanted):
        return aws.find_address(client, allocation_id=wanted)
    return aws.find_address(client, public_ip=wanted)


def _public_ip(client, wanted: str) -> str | None:
    found = _lookup(client, wanted)
    return found["PublicIp"] if found else None


def _require_external(client, spec: ElasticIPSpec) -> dict:
    utils.require_external(spec.common, KIND, lambda wanted: _public_ip(client, wanted))
    return _lookup(client, spec.common.resource_id) or {}


def _allocation_id(client, properties: Mapping[str, Any], node_id: str) -> str:
    """The recorded allocation id; for an address the classic plugin recorded
    (its public IP only), the one AWS has for that IP."""
    allocation_id = properties.get(constants.ALLOCATION_ID)
    if allocation_id:
        return allocation_id
    address = ownership.recorded_address(client, properties)
    if not address or not address.get("AllocationId"):
        raise PluginError(
            f"elastic IP {ownership.recorded(properties)} of '{node_id}' does not exist in this account and region. "
            "Fix: reinstall the elastic IP node"
        )
    return address["AllocationId"]


def _release_others(client, owner: dict[str, str], kept: str, window: float, warn) -> bool:
    """After an allocate whose answer may have been lost before (a resent call):
    releases every other address tagged as this node instance's (allocated a
    moment ago: EC2 may not know them by id yet). False when the listing by
    tag never caught up, and release must sweep instead."""

    def release(other: dict) -> None:
        aws.release_address(client, other["AllocationId"], fresh_for=window)
        warn(f"Released elastic IP {other['PublicIp']}, a duplicate allocated by a resent call.")

    return (
        ownership.sweep_others(lambda: aws.find_owned_addresses(client, owner), "AllocationId", kept, release, window)
        is not None
    )


def _own_addresses(client, properties: Mapping[str, Any], owner: dict[str, str]) -> list[tuple[str, str | None]]:
    """(allocation id, public IP) of the address this node instance holds: the
    recorded one (found by its public IP if the classic plugin recorded it),
    else (and after a resent allocate, too) any tagged as this node instance's."""
    allocation_id, public_ip = properties.get(constants.ALLOCATION_ID), properties.get(constants.AWS_RESOURCE_ID)
    if public_ip and not allocation_id:
        address = ownership.recorded_address(client, properties)
        return [(address["AllocationId"], public_ip)] if address else []
    public_ips: dict[str, str] = {}

    def owned_ids() -> list[str]:
        public_ips.update(
            (found["AllocationId"], found["PublicIp"]) for found in aws.find_owned_addresses(client, owner)
        )
        return list(public_ips)

    ids = ownership.recorded_or_owned(
        allocation_id, owned_ids, also_owned=bool(properties.get(constants.CREATE_RESENT))
    )
    return [(found, public_ips.get(found, public_ip)) for found in ids]
