"""What a whole deployment will create, against what the account has left.

``plan_of`` adds up, per region and endpoint (one client configuration), what
install creates: elastic IPs, instances by type, rules per security group,
groups per instance, key pairs. External resources create nothing and are
left out. ``check`` compares one plan with the account:

- elastic IPs: DescribeAccountAttributes ``vpc-max-elastic-ips``, minus the
  VPC addresses DescribeAddresses lists;
- vCPUs of running On-Demand instances, per quota (instance families):
  Service Quotas GetServiceQuota, minus the vCPUs of the pending and running
  On-Demand instances (DescribeInstances), each type's vCPUs from
  DescribeInstanceTypes;
- rules per group (inbound and outbound apart) and groups per network
  interface: the documented defaults (60, 5) are the least an account has,
  so only a node above them costs a call (GetServiceQuota, service ``vpc``);
- key pairs: 5,000 per region (not adjustable), minus DescribeKeyPairs.

A call is made only for what the plan creates. What this deployment already
owns (its ownership tag ``cloudify:deployment-id``) is needed, not in use, so
a check run again halfway through install gives the same answer.

The answer is two lists of lines: shortfalls (what is needed, what is left,
the fix, naming the nodes), which refuse the deployment, and quotas that
could not be checked (no permission, or an emulator without the call), which
are warnings: a quota nobody could read is no proof of a shortfall.
Throttling, 5xx answers and lost connections are raised, to be retried.
Nothing here needs an operation's ctx: ec2.deployment gathers the node instances.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ec2 import connection, constants, errors, instance_request, rules, utils
from ec2.constants import ELASTIC_IP, KEY_PAIR, NODE_TYPES, SECURITY_GROUP
from ec2.errors import PluginError

ELASTIC_IP_ATTRIBUTE = "vpc-max-elastic-ips"
ELASTIC_IP_QUOTA = "L-0263D0A3"  # EC2-VPC Elastic IPs: where to ask for more
KEY_PAIRS_PER_REGION = 5000
RULES_PER_GROUP = ("vpc", "L-0EA8095F", 60)  # inbound or outbound rules per security group
GROUPS_PER_INTERFACE = ("vpc", "L-2AFB9258", 5)  # security groups per network interface
# Running On-Demand instances, in vCPUs: the quota code, and the letters that begin the families it covers.
VCPU_QUOTAS = {
    "Standard (A, C, D, H, I, M, R, T, Z)": ("L-1216C47A", ("a", "c", "d", "h", "i", "im", "is", "m", "r", "t", "z")),
    "G and VT": ("L-DB2E81BA", ("g", "vt")),
    "P": ("L-417A185B", ("p",)),
    "F": ("L-74FC7D96", ("f",)),
    "X": ("L-7295265B", ("x",)),
    "Inf": ("L-1945791B", ("inf",)),
    "DL": ("L-6E869C2A", ("dl",)),
    "Trn": ("L-2C3B7624", ("trn",)),
    "High Memory": ("L-43DA4232", ("u",)),
    "HPC": ("L-F7808C92", ("hpc",)),
}
COUNTED_STATES = ("pending", "running")


@dataclass
class Plan:
    """What install creates with one client configuration; each entry names (node id, instance id)."""

    aws_config: dict = field(default_factory=dict)
    addresses: list[tuple[str, str]] = field(default_factory=list)
    instances: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    key_pairs: list[tuple[str, str]] = field(default_factory=list)
    rules: dict[str, tuple[int, int]] = field(default_factory=dict)  # node id -> (inbound, outbound)
    groups: dict[str, int] = field(default_factory=dict)  # instance node id -> groups per interface


@dataclass(frozen=True)
class Member:
    """One node instance of the deployment, as the plan needs it."""

    node_id: str
    instance_id: str
    type_hierarchy: tuple[str, ...]
    properties: Mapping[str, Any]
    relationships: tuple[Mapping[str, Any], ...] = ()  # the node's: type, type_hierarchy, target_id


@dataclass
class Report:
    shortfalls: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    def extend(self, other: Report) -> None:
        self.shortfalls += other.shortfalls
        self.unchecked += other.unchecked


# --- what the deployment creates ----------------------------------------------------


def plan_of(members: Iterable[Member]) -> dict[str, Plan]:
    """The plans of a deployment's node instances, by client configuration. A
    node whose properties do not parse is left out: its own check reports it."""
    plans: dict[str, Plan] = {}
    for member in members:
        kind = next((name for name in NODE_TYPES if name in member.type_hierarchy), None)
        if kind is None:
            continue
        try:
            common = utils.parse_common(member.properties)
            if common.external:
                continue
            key = json.dumps(connection.client_settings(common.aws_config), sort_keys=True)
            plan = plans.setdefault(key, Plan(aws_config=common.aws_config))
            where = (member.node_id, member.instance_id)
            if kind == ELASTIC_IP:
                plan.addresses.append(where)
            elif kind == KEY_PAIR:
                plan.key_pairs.append(where)
            elif kind == SECURITY_GROUP:
                plan.rules[member.node_id] = (
                    len(rules.parse_rules(member.properties, "rules")),
                    len(rules.parse_rules(member.properties, "egress_rules")),
                )
            else:
                fields = instance_request.parse(member.properties).fields
                market = (fields.get("InstanceMarketOptions") or {}).get("MarketType")
                if market != "spot":  # Spot requests have quotas of their own
                    plan.instances[str(fields["InstanceType"])].append(where)
                plan.groups[member.node_id] = _groups_per_interface(member, fields)
        except PluginError:
            continue
    return plans


def _groups_per_interface(member: Member, fields: Mapping[str, Any]) -> int:
    connected = {
        relationship.get("target_id")
        for relationship in member.relationships
        if instance_request.SECURITY_GROUP_RELATIONSHIP
        in (relationship.get("type_hierarchy") or [relationship.get("type")])
    }
    named = {*(fields.get("SecurityGroupIds") or []), *(fields.get("SecurityGroups") or [])}
    return len(connected) + len(named)


# --- against the account ----------------------------------------------------------


def check(plan: Plan, ec2, quotas_client: Callable[[], Any], deployment_id: str) -> Report:
    """The shortfalls and the quotas that could not be checked for one plan.
    ``quotas_client`` makes the Service Quotas client when one is needed."""
    report = Report()
    service_quotas = _QuotaReader(quotas_client)
    if plan.addresses:
        report.extend(_elastic_ips(plan, ec2, deployment_id))
    if plan.instances:
        report.extend(_vcpus(plan, ec2, service_quotas, deployment_id))
    if plan.key_pairs:
        report.extend(_key_pairs(plan, ec2, deployment_id))
    report.extend(_rules(plan, service_quotas))
    report.extend(_groups(plan, service_quotas))
    return report


class _QuotaReader:
    """GetServiceQuota values, each read once; None (and why) when it cannot be read."""

    def __init__(self, make_client: Callable[[], Any]) -> None:
        self._make_client = make_client
        self._client: Any = None
        self._read: dict[tuple[str, str], tuple[float | None, str]] = {}

    def value(self, service: str, code: str) -> tuple[float | None, str]:
        if (service, code) not in self._read:
            try:
                if self._client is None:
                    self._client = self._make_client()
                quota = self._client.get_service_quota(ServiceCode=service, QuotaCode=code)["Quota"]
                self._read[service, code] = (float(quota["Value"]), "")
            except (ClientError, BotoCoreError, PluginError) as error:
                self._read[service, code] = (None, _why(error, "servicequotas:GetServiceQuota"))
        return self._read[service, code]


def _elastic_ips(plan: Plan, ec2, deployment_id: str) -> Report:
    needed = len(plan.addresses)
    try:
        attributes = ec2.describe_account_attributes(AttributeNames=[ELASTIC_IP_ATTRIBUTE])["AccountAttributes"]
        limit = next(
            int(attribute["AttributeValues"][0]["AttributeValue"])
            for attribute in attributes
            if attribute["AttributeName"] == ELASTIC_IP_ATTRIBUTE
        )
        addresses = ec2.describe_addresses()["Addresses"]
    except (ClientError, BotoCoreError, StopIteration, LookupError, ValueError) as error:
        why = _why(error, "ec2:DescribeAccountAttributes and ec2:DescribeAddresses")
        return Report(unchecked=[f"elastic IPs could not be checked ({why}); {_nodes(plan.addresses)} need {needed}"])
    in_use = sum(
        1 for address in addresses if address.get("Domain", "vpc") == "vpc" and not _ours(address, deployment_id)
    )
    return _against(
        needed,
        limit,
        in_use,
        lambda left: (
            f"elastic IPs: {_nodes(plan.addresses)} need {needed}; {left} left "
            f"({ELASTIC_IP_ATTRIBUTE} {limit} minus {in_use} in use). Fix: release addresses nobody uses, "
            f"ask AWS for more (Service Quotas, EC2-VPC Elastic IPs, {ELASTIC_IP_QUOTA}), or allocate fewer"
        ),
    )


def _against(needed: int, limit: int, in_use: int, shortfall: Callable[[int], str]) -> Report:
    """Nothing when ``needed`` fits in what ``in_use`` leaves of ``limit``; else ``shortfall``(what is left)."""
    left = max(limit - in_use, 0)
    return Report() if needed <= left else Report(shortfalls=[shortfall(left)])


def _vcpus(plan: Plan, ec2, service_quotas: _QuotaReader, deployment_id: str) -> Report:
    report = Report()
    by_quota: dict[str, dict[str, list[tuple[str, str]]]] = defaultdict(dict)
    for instance_type, where in plan.instances.items():
        name = quota_of(instance_type)
        if name is None:
            report.unchecked.append(
                f"vCPUs of {instance_type} could not be checked (no known On-Demand quota for its family); "
                f"{_nodes(where)} launch {len(where)}"
            )
            continue
        by_quota[name][instance_type] = where
    limits: dict[str, float] = {}
    for name, types in by_quota.items():
        code = VCPU_QUOTAS[name][0]
        value, why = service_quotas.value("ec2", code)
        if value is None:
            where = [entry for entries in types.values() for entry in entries]
            report.unchecked.append(
                f"vCPUs of Running On-Demand {name} instances ({code}) could not be checked ({why}); "
                f"{_nodes(where)} launch {len(where)} instance(s) of {', '.join(sorted(types))}"
            )
        else:
            limits[name] = value
    if not limits:
        return report
    try:
        running = [
            instance
            for page in ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-state-name", "Values": list(COUNTED_STATES)}]
            )
            for reservation in page["Reservations"]
            for instance in reservation["Instances"]
            if instance.get("InstanceLifecycle") != "spot" and not _ours(instance, deployment_id)
        ]
        wanted = {t for name in limits for t in by_quota[name]} | {i["InstanceType"] for i in running}
        vcpus = _vcpus_of(ec2, sorted(t for t in wanted if quota_of(t) in limits))
    except (ClientError, BotoCoreError, KeyError) as error:
        why = _why(error, "ec2:DescribeInstances and ec2:DescribeInstanceTypes")
        report.unchecked.append(f"vCPUs could not be checked ({why})")
        return report
    in_use: Counter[str] = Counter()
    for instance in running:
        name = quota_of(instance["InstanceType"])
        if name in limits:
            in_use[name] += vcpus.get(instance["InstanceType"], 0)
    for name, limit in limits.items():
        types = by_quota[name]
        needed = sum(vcpus.get(instance_type, 0) * len(where) for instance_type, where in types.items())
        left = max(int(limit) - in_use[name], 0)
        if needed > left:
            where = [entry for entries in types.values() for entry in entries]
            shapes = ", ".join(f"{len(w)} x {t} ({vcpus.get(t, 0)} vCPUs)" for t, w in sorted(types.items()))
            report.shortfalls.append(
                f"vCPUs of Running On-Demand {name} instances: {_nodes(where)} need {needed} ({shapes}); "
                f"{left} left (quota {VCPU_QUOTAS[name][0]} {int(limit)} minus {in_use[name]} in use). "
                "Fix: stop or terminate instances nobody uses, ask AWS for more (Service Quotas), "
                "or choose smaller instance types"
            )
    return report


def _vcpus_of(ec2, instance_types: list[str]) -> dict[str, int]:
    """Each type's default vCPUs (DescribeInstanceTypes, 100 types a call)."""
    found: dict[str, int] = {}
    for start in range(0, len(instance_types), 100):
        answer = ec2.describe_instance_types(InstanceTypes=instance_types[start : start + 100])
        for described in answer["InstanceTypes"]:
            found[described["InstanceType"]] = int(described["VCpuInfo"]["DefaultVCpus"])
    return found


def quota_of(instance_type: str) -> str | None:
    """The name of the On-Demand vCPU quota (VCPU_QUOTAS) that ``instance_type`` counts against: by the
    letters before the family's generation digit ("t" of t3.micro, "trn" of trn1n, "u" of u-6tb1)."""
    head = re.split(r"[0-9-]", instance_type.lower(), maxsplit=1)[0]
    return next((name for name, (_code, heads) in VCPU_QUOTAS.items() if head in heads), None)


def _key_pairs(plan: Plan, ec2, deployment_id: str) -> Report:
    needed = len(plan.key_pairs)
    try:
        existing = ec2.describe_key_pairs()["KeyPairs"]
    except (ClientError, BotoCoreError) as error:
        return Report(
            unchecked=[
                f"key pairs could not be checked ({_why(error, 'ec2:DescribeKeyPairs')}); "
                f"{_nodes(plan.key_pairs)} create {needed}"
            ]
        )
    in_use = sum(1 for key_pair in existing if not _ours(key_pair, deployment_id))
    return _against(
        needed,
        KEY_PAIRS_PER_REGION,
        in_use,
        lambda left: (
            f"key pairs: {_nodes(plan.key_pairs)} create {needed}; {left} left (a region holds "
            f"{KEY_PAIRS_PER_REGION}, {in_use} in use). Fix: delete key pairs nobody uses, or use an existing "
            "key pair (use_external_resource)"
        ),
    )


def _rules(plan: Plan, service_quotas: _QuotaReader) -> Report:
    service, code, default = RULES_PER_GROUP
    over = {node: counts for node, counts in sorted(plan.rules.items()) if max(counts) > default}
    if not over:
        return Report()
    limit, source, report = _limit(service_quotas, service, code, default, "inbound or outbound rules per group")
    for node, (inbound, outbound) in over.items():
        for direction, count, prop in (("inbound", inbound, "rules"), ("outbound", outbound, "egress_rules")):
            if count > limit:
                report.shortfalls.append(
                    f"rules per security group: node '{node}' needs {count} {direction} rules ('{prop}'); "
                    f"a group takes {limit} ({source}). Fix: split the rules over more groups, or ask AWS for more "
                    f"(Service Quotas, {code}){_permission_fix(source)}"
                )
    return report


def _groups(plan: Plan, service_quotas: _QuotaReader) -> Report:
    service, code, default = GROUPS_PER_INTERFACE
    over = {node: count for node, count in sorted(plan.groups.items()) if count > default}
    if not over:
        return Report()
    limit, source, report = _limit(service_quotas, service, code, default, "security groups per network interface")
    for node, count in over.items():
        if count > limit:
            report.shortfalls.append(
                f"security groups per network interface: node '{node}' gives its instances {count} groups; "
                f"an interface takes {limit} ({source}). Fix: merge groups, or ask AWS for more "
                f"(Service Quotas, {code}){_permission_fix(source)}"
            )
    return report


def _limit(service_quotas: _QuotaReader, service: str, code: str, default: int, what: str) -> tuple[int, str, Report]:
    """The account's quota, else the documented default (said so in the report)."""
    value, why = service_quotas.value(service, code)
    if value is not None:
        return int(value), f"the account's quota {code}", Report()
    note = f"{what} ({code}) could not be read ({why}); compared with the documented default {default}"
    return default, f"the documented default; the account's quota {code} could not be read", Report(unchecked=[note])


def _permission_fix(source: str) -> str:
    return ", or allow servicequotas:GetServiceQuota if the account has more" if "could not be read" in source else ""


# --- helpers ---------------------------------------------------------------------


def _ours(resource: Mapping[str, Any], deployment_id: str) -> bool:
    """Whether the deployment's ownership tag marks ``resource``: then it is counted as needed, not as in use."""
    return any(
        tag.get("Key") == constants.TAG_DEPLOYMENT_ID and tag.get("Value") == deployment_id
        for tag in resource.get("Tags") or []
    )


def _nodes(where: Iterable[tuple[str, str]]) -> str:
    """Names the nodes and how many of their instances: "node 'ip' (6 instances)"."""
    counts = Counter(node for node, _instance in where)
    named = ", ".join(f"'{node}' ({n} instance{'s' if n != 1 else ''})" for node, n in sorted(counts.items()))
    return f"node{'s' if len(counts) != 1 else ''} {named}"


def _why(error: BaseException, permission: str) -> str:
    """Why a quota could not be read. Throttling, 5xx and lost connections are
    raised instead: worth another try (the engine retries validation), not a warning."""
    if isinstance(error, (ClientError, BotoCoreError)) and errors.describe(error)[0]:
        raise error
    if isinstance(error, ClientError):
        code = errors.error_code(error) or f"HTTP {error.response.get('ResponseMetadata', {}).get('HTTPStatusCode')}"
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            return f"{code}: allow {permission} to these credentials"
        return f"{error.operation_name} answered {code}"
    return str(error) or type(error).__name__
