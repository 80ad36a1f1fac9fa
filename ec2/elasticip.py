"""cloudify.aws.nodes.ElasticIP and the instance_connected_to_elastic_ip relationship.

allocate: validate, adopt an address an interrupted earlier run allocated (found
by its ownership tags) or allocate a VPC address with the tags inline, record
the public IP as ``aws_resource_id`` and the ``allocation_id``. release: wait
until nothing uses the address, release it, pop the runtime properties.

associate / disassociate (source: the instance, target: the address): tie the
address to the instance, or untie it only while it is still tied to this
instance; the instance's public IP and DNS name are refreshed from EC2. When
both ends are external, only runtime properties change.
"""

from __future__ import annotations

import ipaddress
import re

from cloudify.decorators import operation
from cloudify.exceptions import NonRecoverableError

from ec2 import constants, utils

KIND = "elastic IP"
ALLOCATION_ID_PATTERN = re.compile(r"^eipalloc-([0-9a-f]{8}|[0-9a-f]{17})$")
ADDRESS_PROPERTIES = (constants.ALLOCATION_ID, constants.ASSOCIATION_ID, constants.ASSOCIATED_INSTANCE_ID)
FREE, GONE = "free", "released"


# --- operations -------------------------------------------------------------


@operation(resumable=True)
def allocate(ctx, **_):
    validate(ctx)
    client = utils.client_for(ctx.node)
    lookup = AddressLookup(ctx, client)
    if utils.adopt_external(ctx, KIND, lookup.public_ip):
        utils.record(ctx.instance, **{constants.ALLOCATION_ID: lookup.found["AllocationId"]})
        return

    address = _left_over(ctx, client)
    if address:
        ctx.logger.warning(
            f"Adopting elastic IP {address['PublicIp']} ({address['AllocationId']}), allocated for this "
            "node instance by an earlier, interrupted run."
        )
    else:
        if utils.resource_id(ctx.node):
            ctx.logger.warning(
                f"resource_id {utils.resource_id(ctx.node)} is ignored for a new address: AWS chooses the IP."
            )
        address = utils.call(
            ctx, client, "allocate_address", Domain="vpc", TagSpecifications=utils.creation_tags(ctx, "elastic-ip")
        )
        ctx.logger.info(f"Allocated elastic IP {address['PublicIp']} ({address['AllocationId']}).")
    utils.record(
        ctx.instance,
        save=True,
        **{constants.AWS_RESOURCE_ID: address["PublicIp"], constants.ALLOCATION_ID: address["AllocationId"]},
    )


@operation(resumable=True)
def release(ctx, **_):
    client = utils.client_for(ctx.node)
    if utils.release_external(ctx, KIND, AddressLookup(ctx, client).public_ip, *ADDRESS_PROPERTIES):
        return
    allocation_id = ctx.instance.runtime_properties.get(constants.ALLOCATION_ID)
    public_ip = ctx.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    if not allocation_id:
        # An allocate interrupted before recording: its address carries our tags.
        left_over = _left_over(ctx, client)
        allocation_id, public_ip = (left_over["AllocationId"], left_over["PublicIp"]) if left_over else (None, None)
    if allocation_id:
        what = f"elastic IP {public_ip} ({allocation_id})"
        if not utils.wait_for(ctx, ctx.node, what, lambda: _usage(ctx, client, allocation_id), (FREE, GONE)):
            return
        # InvalidIPAddress.InUse: associated again between the check and the release.
        utils.call(
            ctx,
            client,
            "release_address",
            not_found_ok=True,
            retry_codes=("InvalidIPAddress.InUse",),
            AllocationId=allocation_id,
        )
        ctx.logger.info(f"Released {what}.")
    utils.forget(ctx.instance, constants.AWS_RESOURCE_ID, *ADDRESS_PROPERTIES)


@operation(resumable=True)
def creation_validation(ctx, **_):
    validate(ctx)
    client = utils.client_for(ctx.node)
    utils.check_existence(ctx, KIND, AddressLookup(ctx, client).public_ip, utils.resource_id(ctx.node))
    ctx.logger.info(f"Elastic IP {utils.resource_id(ctx.node) or '(new)'} is valid.")


@operation(resumable=True)
def associate(ctx, **_):
    """Relationship establish: ties the target address to the source instance."""
    instance_id, public_ip, allocation_id = _ends(ctx)
    if _both_external(ctx):
        utils.record(ctx.target.instance, **{constants.ASSOCIATED_INSTANCE_ID: instance_id})
        utils.record(ctx.source.instance, public_ip_address=public_ip)
        ctx.logger.info(
            f"Instance {instance_id} and elastic IP {public_ip} are both external: runtime properties set, "
            "no association made."
        )
        return

    client = utils.client_for(ctx.target.node)
    # IncorrectInstanceState: the instance is not running yet.
    associated = utils.call(
        ctx,
        client,
        "associate_address",
        retry_codes=("IncorrectInstanceState",),
        AllocationId=allocation_id,
        InstanceId=instance_id,
    )
    utils.record(
        ctx.target.instance,
        **{constants.ASSOCIATION_ID: associated["AssociationId"], constants.ASSOCIATED_INSTANCE_ID: instance_id},
    )
    ctx.logger.info(f"Associated elastic IP {public_ip} with instance {instance_id} ({associated['AssociationId']}).")
    refresh_instance_addresses(ctx, instance_id, public_ip)


@operation(resumable=True)
def disassociate(ctx, **_):
    """Relationship unlink: unties the address, only while it is still tied to this instance."""
    if not _recorded_ends(ctx):
        ctx.logger.info("The instance or the elastic IP was never created; nothing to disassociate.")
        utils.forget(ctx.target.instance, constants.ASSOCIATION_ID, constants.ASSOCIATED_INSTANCE_ID)
        return
    instance_id, public_ip, allocation_id = _ends(ctx)
    if _both_external(ctx):
        utils.forget(ctx.target.instance, constants.ASSOCIATED_INSTANCE_ID)
        utils.forget(ctx.source.instance, "public_ip_address")
        ctx.logger.info(
            f"Instance {instance_id} and elastic IP {public_ip} are both external: runtime properties unset."
        )
        return

    client = utils.client_for(ctx.target.node)
    address = AddressLookup(ctx, client).address(allocation_id)
    if address is None:
        ctx.logger.info(f"Elastic IP {public_ip} no longer exists; nothing to disassociate.")
    elif address.get("InstanceId") != instance_id or not address.get("AssociationId"):
        ctx.logger.warning(
            f"Elastic IP {public_ip} is no longer associated with instance {instance_id} "
            f"(now: {address.get('InstanceId') or 'nothing'}); that association is left alone."
        )
    else:
        utils.call(ctx, client, "disassociate_address", not_found_ok=True, AssociationId=address["AssociationId"])
        ctx.logger.info(f"Disassociated elastic IP {public_ip} from instance {instance_id}.")
    utils.forget(ctx.target.instance, constants.ASSOCIATION_ID, constants.ASSOCIATED_INSTANCE_ID)
    refresh_instance_addresses(ctx, instance_id)


# --- validation -------------------------------------------------------------


def validate(ctx) -> None:
    """Checks the properties before AWS is called."""
    utils.validate_tags(ctx)
    utils.validate_wait_settings(ctx)
    wanted = utils.resource_id(ctx.node)
    if wanted and not (ALLOCATION_ID_PATTERN.match(wanted) or _is_ipv4(wanted)):
        raise utils.bad_input(
            ctx,
            "resource_id",
            f"is {wanted!r}, neither a public IPv4 address nor an allocation id",
            "give an address such as 203.0.113.10 or an id such as eipalloc-0123abcd",
        )


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def _ends(ctx) -> tuple[str, str, str | None]:
    """(instance id, public IP, allocation id) of a relationship's two ends."""
    instance_id = ctx.source.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    public_ip = ctx.target.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    allocation_id = ctx.target.instance.runtime_properties.get(constants.ALLOCATION_ID)
    if not instance_id:
        raise NonRecoverableError(
            f"{utils.node_label(ctx)}: instance '{ctx.source.node.id}' has no aws_resource_id. "
            "Fix: create the instance before connecting it to the elastic IP."
        )
    if not public_ip:
        raise NonRecoverableError(
            f"{utils.node_label(ctx)}: elastic IP '{ctx.target.node.id}' has no aws_resource_id. "
            "Fix: create the elastic IP before connecting an instance to it."
        )
    if not allocation_id and not _both_external(ctx):
        raise NonRecoverableError(
            f"{utils.node_label(ctx)}: elastic IP '{ctx.target.node.id}' ({public_ip}) has no allocation_id. "
            "Fix: reinstall the elastic IP node so that it records its allocation id."
        )
    return instance_id, public_ip, allocation_id


def _recorded_ends(ctx) -> bool:
    """Whether both ends of the relationship have recorded their AWS ids."""
    return bool(
        ctx.source.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
        and ctx.target.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    )


def _both_external(ctx) -> bool:
    return utils.use_external(ctx.source.node) and utils.use_external(ctx.target.node)


# --- AWS ------------------------------------------------------------------------


class AddressLookup:
    """Finds an address by public IP or allocation id; remembers the last one found."""

    def __init__(self, ctx, client) -> None:
        self.ctx = ctx
        self.client = client
        self.found: dict | None = None

    def address(self, wanted: str) -> dict | None:
        key = "AllocationIds" if ALLOCATION_ID_PATTERN.match(wanted) else "PublicIps"
        addresses = utils.existing(self.ctx, self.client, "describe_addresses", "Addresses", **{key: [wanted]})
        self.found = addresses[0] if addresses else None
        return self.found

    def public_ip(self, wanted: str) -> str | None:
        """For the external-resource helpers: the address's public IP, if it exists."""
        found = self.address(wanted)
        return found["PublicIp"] if found else None


def _left_over(ctx, client) -> dict | None:
    """An address this node instance allocated in an earlier run, if any."""
    found = utils.find_own(ctx, client, "describe_addresses", "Addresses")
    return found[0] if found else None


def _usage(ctx, client, allocation_id: str) -> str:
    address = AddressLookup(ctx, client).address(allocation_id)
    if address is None:
        return GONE
    if not address.get("AssociationId"):
        return FREE
    holder = address.get("InstanceId") or address.get("NetworkInterfaceId") or "another resource"
    return f"in use by {holder} (disassociate it there to let uninstall release it)"


def refresh_instance_addresses(ctx, instance_id: str, public_ip: str | None = None) -> None:
    """Copies the instance's public IP and DNS name from EC2 to its runtime
    properties. A ``public_ip`` just associated is recorded as it is: a
    describe right after the association may still show the old one."""
    client = utils.client_for(ctx.source.node)
    reservations = utils.existing(ctx, client, "describe_instances", "Reservations", InstanceIds=[instance_id])
    if not reservations or not reservations[0]["Instances"]:
        return
    described = reservations[0]["Instances"][0]
    if public_ip:
        described["PublicIpAddress"] = public_ip
    for name, key in (("public_ip_address", "PublicIpAddress"), ("public_dns_name", "PublicDnsName")):
        if described.get(key):
            utils.record(ctx.source.instance, **{name: described[key]})
        else:
            utils.forget(ctx.source.instance, name)
