"""A security group's rules, as the classic properties give them (``rules``,
``egress_rules``): parsed and checked without calling AWS. ec2.securitygroup
creates them; ec2.quotas counts them."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ec2 import constants
from ec2.errors import BadInput
from ec2.properties import as_text

RULE_KEYS = ("ip_protocol", "from_port", "to_port", "cidr_ip", "src_group_id")
# What a rule's ip_protocol may say, and the code EC2 wants for it (numbers pass through).
PROTOCOL_CODES = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmpv6", "all": "-1", "-1": "-1"}


@dataclass(frozen=True)
class Rule:
    """One rule as EC2 ``IpPermissions`` wants it; ``source_group`` (an id or a
    name) still has to be resolved to an id."""

    where: str  # such as "rules[0]"
    permission: dict
    source_group: str = ""


def parse_rules(properties: Mapping[str, Any], prop: str) -> tuple[Rule, ...]:
    """Classic rules (ip_protocol, from_port, to_port, cidr_ip or src_group_id)
    as EC2 permissions, refusing any invalid rule."""
    rules = properties.get(prop) or []
    if not isinstance(rules, list):
        raise BadInput(prop, f"is a {type(rules).__name__}", "give a list of rules")
    return tuple(_rule(f"{prop}[{index}]", rule) for index, rule in enumerate(rules))


def _rule(where: str, rule: Any) -> Rule:
    if not isinstance(rule, dict):
        raise BadInput(where, "is not a dictionary", f"give a rule with keys {', '.join(RULE_KEYS)}")
    unknown = sorted(set(rule) - set(RULE_KEYS))
    if unknown:
        raise BadInput(where, f"has unknown key(s) {unknown}", f"use only {', '.join(RULE_KEYS)}")
    protocol = _protocol(where, rule.get("ip_protocol"))
    permission: dict = {"IpProtocol": protocol}
    if protocol in constants.PORT_RANGE_PROTOCOLS or protocol in constants.ICMP_PROTOCOLS:
        low = -1 if protocol in constants.ICMP_PROTOCOLS else 0
        high = 255 if protocol in constants.ICMP_PROTOCOLS else 65535
        from_port = _port(where, rule, "from_port", low, high)
        to_port = _port(where, rule, "to_port", low, high)
        if protocol in constants.PORT_RANGE_PROTOCOLS and from_port > to_port:
            raise BadInput(f"{where}.from_port", f"({from_port}) is above to_port ({to_port})", "swap them")
        permission.update(FromPort=from_port, ToPort=to_port)

    cidr, group = as_text(rule.get("cidr_ip")), as_text(rule.get("src_group_id"))
    if bool(cidr) == bool(group):
        raise BadInput(where, "must have exactly one of cidr_ip or src_group_id", "keep one of the two")
    if group:
        return Rule(where, permission, group)
    network = _network(where, cidr)
    if network.version == 4:
        permission["IpRanges"] = [{"CidrIp": str(network)}]
    else:
        permission["Ipv6Ranges"] = [{"CidrIpv6": str(network)}]
    return Rule(where, permission)


def _protocol(where: str, value) -> str:
    text = str(value if value is not None else "").strip().lower()
    if text in PROTOCOL_CODES:
        return PROTOCOL_CODES[text]
    if text.isdigit() and 0 <= int(text) <= 255:
        return str(int(text))
    raise BadInput(
        f"{where}.ip_protocol",
        f"is {value!r}",
        "use tcp, udp, icmp, icmpv6, -1 (all) or a protocol number from 0 to 255",
    )


def _port(where: str, rule: dict, key: str, low: int, high: int) -> int:
    value = rule.get(key)
    try:
        port = int(str(value).strip())
    except ValueError:
        port = None
    if isinstance(value, bool) or port is None or not low <= port <= high:
        raise BadInput(f"{where}.{key}", f"is {value!r}", f"give a whole number from {low} to {high}")
    return port


def _network(where: str, cidr) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
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
        raise BadInput(f"{where}.cidr_ip", f"is {cidr!r}, not a valid CIDR ({error})", hint) from None
