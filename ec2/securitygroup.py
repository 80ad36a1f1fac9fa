"""cloudify.aws.nodes.SecurityGroup: a VPC security group and its rules.

create: validate every rule, create the group (in ``vpc_id`` or the default
VPC) with its tags, then authorise all rules in one call each for ingress and
egress. If authorising fails, the group is deleted again. delete: remove the
group, retrying while instances that use it are still being torn down.
"""

from __future__ import annotations

import ipaddress
import re

from cloudify.decorators import operation

from ec2 import constants, utils

GROUP_ID_PATTERN = re.compile(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")
RULE_KEYS = ("ip_protocol", "from_port", "to_port", "cidr_ip", "src_group_id")
PROTOCOL_NAMES = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmpv6", "all": "-1", "-1": "-1"}
PORTED_PROTOCOLS = {"tcp", "udp", "6", "17"}
ICMP_PROTOCOLS = {"icmp", "icmpv6", "1", "58"}


# --- operations -------------------------------------------------------------


@operation(resumable=True)
def create(ctx, **_):
    name, description, ingress, egress = validate(ctx)
    client = utils.client_for(ctx.node)
    if utils.adopt_external(ctx, "security group", lambda wanted: _find(ctx, client, wanted)):
        return

    # A rerun after an interrupted create starts afresh.
    _delete_own_group(ctx, client)
    created = utils.call(
        ctx,
        client,
        "create_security_group",
        GroupName=name,
        Description=description,
        VpcId=_vpc_id(ctx, client),
        TagSpecifications=utils.creation_tags(ctx, "security-group", name),
    )
    group_id = created["GroupId"]
    utils.record(ctx.instance, save=True, **{constants.AWS_RESOURCE_ID: group_id})
    try:
        if ingress:
            utils.call(ctx, client, "authorize_security_group_ingress", GroupId=group_id, IpPermissions=ingress)
        if egress:
            utils.call(ctx, client, "authorize_security_group_egress", GroupId=group_id, IpPermissions=egress)
    except Exception:
        ctx.logger.error(f"Authorising the rules of {group_id} failed; deleting the group again.")
        try:
            _delete_own_group(ctx, client)
        except Exception as cleanup_error:
            ctx.logger.error(f"Could not delete {group_id} ({cleanup_error}); it stays recorded for uninstall.")
        raise
    ctx.logger.info(
        f"Created security group {name} ({group_id}) with {len(ingress)} ingress and {len(egress)} egress rules."
    )


@operation(resumable=True)
def delete(ctx, **_):
    client = utils.client_for(ctx.node)
    if utils.release_external(ctx, "security group", lambda wanted: _find(ctx, client, wanted)):
        return
    _delete_own_group(ctx, client)


@operation(resumable=True)
def creation_validation(ctx, **_):
    name, _description, _ingress, _egress = validate(ctx)
    client = utils.client_for(ctx.node)
    utils.check_existence(
        ctx,
        "security group",
        lambda wanted: _find(ctx, client, wanted),
        utils.resource_id(ctx.node),
        lambda: bool(utils.find_own(ctx, client, "describe_security_groups", "SecurityGroups")),
    )
    ctx.logger.info(f"Security group {name} is valid.")


# --- validation -------------------------------------------------------------


def validate(ctx) -> tuple[str, str, list[dict], list[dict]]:
    """Checks every property before AWS is called; returns the request parts."""
    props = ctx.node.properties
    utils.validate_tags(ctx)
    name = utils.resource_id(ctx.node) or utils.generated_name(ctx)
    if not utils.use_external(ctx.node) and (len(name) > 255 or not name.isascii() or name.startswith("sg-")):
        raise utils.bad_input(
            ctx,
            "resource_id",
            f"is not a usable group name ({name!r})",
            "use at most 255 ASCII characters, not starting with 'sg-'",
        )
    description = str(props.get("description") or "").strip() or (
        f"Cloudify security group for node {ctx.node.id} of deployment {ctx.deployment.id}"
    )
    if len(description) > 255 or not description.isascii():
        raise utils.bad_input(ctx, "description", "is longer than 255 characters or not ASCII", "shorten it")
    vpc_id = props.get("vpc_id")
    if vpc_id and not str(vpc_id).startswith("vpc-"):
        raise utils.bad_input(
            ctx,
            "vpc_id",
            f"is {vpc_id!r}, not a VPC id",
            "give an id such as vpc-0abc1234, or leave it empty for the default VPC",
        )
    return name, description, ip_permissions(ctx, "rules"), ip_permissions(ctx, "egress_rules")


def ip_permissions(ctx, prop: str) -> list[dict]:
    """Translates classic rules (ip_protocol, from_port, to_port, cidr_ip or
    src_group_id) into EC2 ``IpPermissions``, refusing any invalid rule."""
    rules = ctx.node.properties.get(prop) or []
    if not isinstance(rules, list):
        raise utils.bad_input(ctx, prop, f"is a {type(rules).__name__}", "give a list of rules")
    return [_permission(ctx, f"{prop}[{index}]", rule) for index, rule in enumerate(rules)]


def _permission(ctx, where: str, rule) -> dict:
    if not isinstance(rule, dict):
        raise utils.bad_input(ctx, where, "is not a dictionary", f"give a rule with keys {', '.join(RULE_KEYS)}")
    unknown = sorted(set(rule) - set(RULE_KEYS))
    if unknown:
        raise utils.bad_input(ctx, where, f"has unknown key(s) {unknown}", f"use only {', '.join(RULE_KEYS)}")
    protocol = _protocol(ctx, where, rule.get("ip_protocol"))
    permission: dict = {"IpProtocol": protocol}
    if protocol in PORTED_PROTOCOLS or protocol in ICMP_PROTOCOLS:
        low = -1 if protocol in ICMP_PROTOCOLS else 0
        high = 255 if protocol in ICMP_PROTOCOLS else 65535
        from_port = _port(ctx, where, rule, "from_port", low, high)
        to_port = _port(ctx, where, rule, "to_port", low, high)
        if protocol in PORTED_PROTOCOLS and from_port > to_port:
            raise utils.bad_input(ctx, f"{where}.from_port", f"({from_port}) is above to_port ({to_port})", "swap them")
        permission.update(FromPort=from_port, ToPort=to_port)

    cidr, group = rule.get("cidr_ip"), rule.get("src_group_id")
    if bool(cidr) == bool(group):
        raise utils.bad_input(ctx, where, "must have exactly one of cidr_ip or src_group_id", "keep one of the two")
    if group:
        if not GROUP_ID_PATTERN.match(str(group)):
            raise utils.bad_input(
                ctx, f"{where}.src_group_id", f"is {group!r}, not a group id", "give an id such as sg-0123abcd"
            )
        permission["UserIdGroupPairs"] = [{"GroupId": str(group)}]
    else:
        network = _network(ctx, where, cidr)
        if network.version == 4:
            permission["IpRanges"] = [{"CidrIp": str(network)}]
        else:
            permission["Ipv6Ranges"] = [{"CidrIpv6": str(network)}]
    return permission


def _protocol(ctx, where: str, value) -> str:
    text = str(value if value is not None else "").strip().lower()
    if text in PROTOCOL_NAMES:
        return PROTOCOL_NAMES[text]
    if text.isdigit() and 0 <= int(text) <= 255:
        return str(int(text))
    raise utils.bad_input(
        ctx,
        f"{where}.ip_protocol",
        f"is {value!r}",
        "use tcp, udp, icmp, icmpv6, -1 (all) or a protocol number from 0 to 255",
    )


def _port(ctx, where: str, rule: dict, key: str, low: int, high: int) -> int:
    value = rule.get(key)
    try:
        port = int(str(value).strip())
    except ValueError:
        port = None
    if isinstance(value, bool) or port is None or not low <= port <= high:
        raise utils.bad_input(ctx, f"{where}.{key}", f"is {value!r}", f"give a whole number from {low} to {high}")
    return port


def _network(ctx, where: str, cidr) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = str(cidr).strip()
    try:
        if "/" not in text:
            raise ValueError("no prefix length")
        return ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        hint = "write it as address/prefix, such as 10.0.0.0/16 or 0.0.0.0/0"
        if "/" in text:
            try:
                hint = f"did you mean {ipaddress.ip_network(text, strict=False)}?"
            except ValueError:
                pass
        raise utils.bad_input(ctx, f"{where}.cidr_ip", f"is {cidr!r}, not a valid CIDR ({error})", hint) from None


# --- AWS ------------------------------------------------------------------------


def _vpc_id(ctx, client) -> str:
    """The node's vpc_id, or the account's default VPC."""
    vpc_id = ctx.node.properties.get("vpc_id")
    if vpc_id:
        return str(vpc_id)
    found = utils.call(ctx, client, "describe_vpcs", Filters=[{"Name": "is-default", "Values": ["true"]}])
    if not found["Vpcs"]:
        raise utils.bad_input(
            ctx, "vpc_id", "is empty and the region has no default VPC", "set vpc_id to the VPC the group belongs in"
        )
    return found["Vpcs"][0]["VpcId"]


def _find(ctx, client, wanted: str) -> str | None:
    """The id of a group given by id, or by name within the node's VPC."""
    if GROUP_ID_PATTERN.match(wanted):
        lookup = {"GroupIds": [wanted]}
    else:
        lookup = {
            "Filters": [
                {"Name": "group-name", "Values": [wanted]},
                {"Name": "vpc-id", "Values": [_vpc_id(ctx, client)]},
            ]
        }
    groups = utils.existing(ctx, client, "describe_security_groups", "SecurityGroups", **lookup)
    return groups[0]["GroupId"] if groups else None


def _delete_own_group(ctx, client) -> None:
    """Deletes the group this node instance made: the recorded one, or one an
    interrupted create left unrecorded (found by its ownership tags)."""
    for group_id in utils.own_ids(ctx, client, "describe_security_groups", "SecurityGroups", "GroupId"):
        # DependencyViolation: an instance using the group is still shutting down.
        utils.call(
            ctx,
            client,
            "delete_security_group",
            not_found_ok=True,
            retry_codes=("DependencyViolation",),
            GroupId=group_id,
        )
        ctx.logger.info(f"Deleted security group {group_id}.")
    utils.forget(ctx.instance, constants.AWS_RESOURCE_ID, save=True)
