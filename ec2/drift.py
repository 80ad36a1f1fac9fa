"""check_drift: what changed in AWS outside Cloudify, one operation per type.

Cloudify's ``check_drift`` workflow calls ``cloudify.interfaces.lifecycle.check_drift``
on each node instance and ``cloudify.interfaces.relationship_lifecycle.check_drift``
on each relationship, and stores what they return in the node instance's
system properties (``configuration_drift``). A deployment update runs the
``update`` operations (``ec2.update``) only where that result is not empty.

Each operation returns None when nothing drifted, otherwise a list of short
descriptions, one per difference from the blueprint and the runtime properties:

- Instance: state (running), type, image, key pair, security groups, tags.
- SecurityGroup: rules added or removed outside Cloudify (ingress and egress;
  the allow-all egress rules AWS gives a new group are left out unless the
  blueprint has them), tags.
- KeyPair: the fingerprint recorded at create, tags.
- ElasticIP: the association with the recorded instance, tags.
- the elastic IP relationship: the address is still associated with the instance.

Tags: the ``tags`` property against the resource's tags. The ownership tags,
``aws:`` tags and the generated Name tag are not compared. External resources:
only that they still exist, since the plugin never changes them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from ec2 import aws, connection, constants, instance_request, keypair, ownership, securitygroup, utils
from ec2.aws import GONE_STATES, NOT_FOUND, state_of

# One rule as EC2 describes it, comparable: (protocol, from port, to port, kind of source, source).
RuleKey = tuple
# Protocols whose FromPort and ToPort mean something (ports, or ICMP type and code).
WITH_PORT_FIELDS = constants.PORT_RANGE_PROTOCOLS | constants.ICMP_PROTOCOLS
# The egress rules AWS gives every new VPC group; the plugin neither adds nor removes them.
DEFAULT_EGRESS = frozenset({("-1", None, None, "cidr", "0.0.0.0/0"), ("-1", None, None, "cidr6", "::/0")})
SOURCE_KEYS = (
    ("IpRanges", "CidrIp", "cidr"),
    ("Ipv6Ranges", "CidrIpv6", "cidr6"),
    ("UserIdGroupPairs", "GroupId", "group"),
    ("PrefixListIds", "PrefixListId", "prefix"),
)
OWNERSHIP_TAGS = (constants.TAG_DEPLOYMENT_ID, constants.TAG_NODE_INSTANCE_ID)


# --- operations -------------------------------------------------------------


@utils.ec2_operation
def instance(ctx, **_):
    spec = instance_request.parse(ctx.node.properties)
    client = connection.ec2_client(spec.common.aws_config)
    instance_id = ownership.recorded(
        ctx.instance.runtime_properties, spec.common.resource_id if spec.common.external else None
    )
    if not instance_id:
        return ["no instance is recorded: it was not installed"]
    described = aws.find_instance(client, instance_id)
    state = state_of(described)
    if state == NOT_FOUND or state in GONE_STATES:
        return [f"instance {instance_id} is {state}"]
    if spec.common.external:
        return None
    request = expected_request(instance_request.read(ctx), spec)
    differences = [] if state == "running" else [f"instance {instance_id} is {state}, not running"]
    for what, field in (("type", "InstanceType"), ("image", "ImageId"), ("key pair", "KeyName")):
        if described.get(field) != request.get(field):
            differences.append(f"{what} is {described.get(field)!r}, the blueprint says {request.get(field)!r}")
    differences += _group_drift(described.get("SecurityGroups") or [], request)
    differences += tag_drift(aws.tags_of(described), wanted_instance_tags(request, spec.common.tags))
    return differences or None


@utils.ec2_operation
def security_group(ctx, **_):
    node = utils.node_facts(ctx, with_targets=True)  # a source group a target made a moment ago
    spec = securitygroup.parse(node)
    client = connection.ec2_client(spec.common.aws_config)
    group_id = ownership.recorded(ctx.instance.runtime_properties)
    if not group_id:
        return ["no security group is recorded: it was not installed"]
    group = aws.find_security_group_by_id(client, group_id)
    if not group:
        return [f"security group {group_id} no longer exists"]
    if spec.common.external:
        return None
    differences = []
    resolved = securitygroup.resolve_rules(client, spec, node.targets_fresh_for(spec.common.propagation))
    for direction, (actual, wanted) in rule_sets(group, *resolved).items():
        differences += rule_drift(direction, actual, wanted)
    differences += tag_drift(aws.tags_of(group), spec.common.tags)
    return differences or None


@utils.ec2_operation
def key_pair(ctx, **_):
    common = utils.parse_common(ctx.node.properties)
    client = connection.ec2_client(common.aws_config)
    name = ownership.recorded(ctx.instance.runtime_properties)
    if not name:
        return ["no key pair is recorded: it was not installed"]
    found = aws.find_key_pair(client, name)
    if not found:
        return [f"key pair {name} no longer exists"]
    if common.external:
        return None
    differences = []
    recorded = ctx.instance.runtime_properties.get(keypair.KEY_FINGERPRINT)
    if recorded and found.get("KeyFingerprint") != recorded:
        differences.append(
            f"key pair {name} has fingerprint {found.get('KeyFingerprint')}, not {recorded} as created: it was replaced"
        )
    differences += tag_drift(aws.tags_of(found), common.tags)
    return differences or None


@utils.ec2_operation
def elastic_ip(ctx, **_):
    common = utils.parse_common(ctx.node.properties)
    client = connection.ec2_client(common.aws_config)
    address = ownership.recorded_address(client, ctx.instance.runtime_properties)
    if address is None:
        return ["no elastic IP is recorded: it was not installed"]
    if not address:
        return [f"elastic IP {ctx.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)} no longer exists"]
    if common.external:
        return None
    differences = _association_drift(address, ctx.instance.runtime_properties.get(constants.ASSOCIATED_INSTANCE_ID))
    differences += tag_drift(aws.tags_of(address), common.tags)
    return differences or None


@utils.ec2_operation
def elastic_ip_association(ctx, **_):
    """Relationship (source: the instance, target: the address): the association still holds."""
    if utils.use_external(ctx.source.node) and utils.use_external(ctx.target.node):
        return None  # both external: the plugin made no association
    instance_id = ownership.recorded(ctx.source.instance.runtime_properties)
    client = connection.ec2_client(utils.parse_common(ctx.target.node.properties).aws_config)
    address = ownership.recorded_address(client, ctx.target.instance.runtime_properties)
    if not instance_id or address is None:
        return ["the instance or the elastic IP is not recorded: it was not installed"]
    if not address:
        return [f"elastic IP {ctx.target.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)} no longer exists"]
    return _association_drift(address, instance_id) or None


# --- comparisons, shared with ec2.update ------------------------------------------------


def expected_request(known: instance_request.InstanceContext, spec) -> dict:
    """The RunInstances request the blueprint and the relationships make now (the agent's
    init script stands in: it is not compared)."""
    return instance_request.build_request(
        replace(known, agent_script=lambda: instance_request.AGENT_SCRIPT_STAND_IN), spec
    )


def wanted_instance_tags(request: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, str]:
    """An instance's own tags: the tags property and parameters' TagSpecifications, without
    the ownership tags and the generated Name."""
    (instance_tags,) = [spec for spec in request["TagSpecifications"] if spec["ResourceType"] == "instance"]
    wanted = {tag["Key"]: tag.get("Value", "") for tag in instance_tags["Tags"]}
    ignored = set(OWNERSHIP_TAGS) | (set() if "Name" in tags else {"Name"})
    return {key: value for key, value in wanted.items() if key not in ignored}


def tag_changes(actual: Mapping[str, str], wanted: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """(tags to set, keys to delete) that make ``actual`` carry ``wanted``. The
    ownership tags, ``aws:`` tags and Name (unless wanted) are never touched."""
    ignored = set(OWNERSHIP_TAGS) | (set() if "Name" in wanted else {"Name"})
    to_set = {key: value for key, value in wanted.items() if actual.get(key) != value}
    to_delete = sorted(key for key in actual if key not in wanted and key not in ignored and not key.startswith("aws:"))
    return to_set, to_delete


def tag_drift(actual: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    to_set, to_delete = tag_changes(actual, wanted)
    differences = [
        f"tag {key!r} is {actual[key]!r}, the blueprint says {value!r}"
        if key in actual
        else f"tag {key!r} is missing (the blueprint says {value!r})"
        for key, value in to_set.items()
    ]
    return differences + [f"tag {key!r} ({actual[key]!r}) was added outside Cloudify" for key in to_delete]


def rule_sets(group: Mapping[str, Any], ingress: list[dict], egress: list[dict]) -> dict[str, tuple[set, set]]:
    """{direction: (the group's rules, the blueprint's)}. AWS's allow-all egress
    rules count only when the blueprint has them too."""
    wanted_egress = rules_of(egress)
    actual_egress = rules_of(group.get("IpPermissionsEgress") or []) - (DEFAULT_EGRESS - wanted_egress)
    return {
        "ingress": (rules_of(group.get("IpPermissions") or []), rules_of(ingress)),
        "egress": (actual_egress, wanted_egress),
    }


def rules_of(permissions: Iterable[Mapping[str, Any]]) -> set[RuleKey]:
    """EC2 IpPermissions as single rules: one per protocol, port range and source."""
    rules = set()
    for permission in permissions:
        protocol = str(permission.get("IpProtocol", "")).lower()
        protocol = constants.PROTOCOL_BY_NUMBER.get(protocol, protocol)
        ports = (permission.get("FromPort"), permission.get("ToPort")) if protocol in WITH_PORT_FIELDS else (None, None)
        for list_key, item_key, kind in SOURCE_KEYS:
            for item in permission.get(list_key) or []:
                source = item.get(item_key)
                if kind.startswith("cidr"):
                    source = str(ipaddress.ip_network(source, strict=False))
                rules.add((protocol, *ports, kind, source))
    return rules


def permission_of(rule: RuleKey) -> dict:
    """One rule as an EC2 IpPermissions entry, for authorize and revoke."""
    protocol, from_port, to_port, kind, source = rule
    list_key, item_key = next((list_key, item_key) for list_key, item_key, name in SOURCE_KEYS if name == kind)
    permission: dict[str, Any] = {"IpProtocol": protocol, list_key: [{item_key: source}]}
    if from_port is not None:
        permission.update(FromPort=from_port, ToPort=to_port)
    return permission


def describe_rule(rule: RuleKey) -> str:
    protocol, from_port, to_port, _kind, source = rule
    ports = "" if from_port is None else f" {from_port}" if from_port == to_port else f" {from_port}-{to_port}"
    return f"{'all traffic' if protocol == '-1' else protocol}{ports} with {source}"


def rule_drift(direction: str, actual: set[RuleKey], wanted: set[RuleKey]) -> list[str]:
    added = [
        f"{direction} rule {describe_rule(rule)} was added outside Cloudify"
        for rule in sorted(actual - wanted, key=str)
    ]
    removed = [
        f"{direction} rule {describe_rule(rule)} was removed outside Cloudify"
        for rule in sorted(wanted - actual, key=str)
    ]
    return added + removed


# --- helpers ------------------------------------------------------------------


def _group_drift(groups: list[dict], request: Mapping[str, Any]) -> list[str]:
    wanted_ids, wanted_names = request.get("SecurityGroupIds") or [], request.get("SecurityGroups") or []
    ids, names = {group["GroupId"] for group in groups}, {group.get("GroupName") for group in groups}
    differences = [
        f"security group {wanted} was removed from the instance" for wanted in wanted_ids if wanted not in ids
    ]
    differences += [
        f"security group {wanted} was removed from the instance" for wanted in wanted_names if wanted not in names
    ]
    extra = [
        group for group in groups if group["GroupId"] not in wanted_ids and group.get("GroupName") not in wanted_names
    ]
    if not wanted_ids and not wanted_names:  # AWS put it in its VPC's default group
        extra = [group for group in extra if group.get("GroupName") != "default"]
    return differences + [f"security group {group['GroupId']} was added to the instance" for group in extra]


def _association_drift(address: Mapping[str, Any], instance_id: str | None) -> list[str]:
    actual = address.get("InstanceId") or None
    if actual == (instance_id or None):
        return []
    now = f"instance {actual}" if actual else "nothing"
    recorded = f"instance {instance_id}" if instance_id else "nothing, as recorded"
    return [f"elastic IP {address.get('PublicIp')} is associated with {now}, not with {recorded}"]
