"""The blueprints the benchmarks deploy."""

from __future__ import annotations

from tools.local import IMAGE_ID

NO_AGENT = {"install_method": "none"}
RULES = [
    {"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ip": "0.0.0.0/0"},
    {"ip_protocol": "tcp", "from_port": 80, "to_port": 80, "cidr_ip": "0.0.0.0/0"},
]
# Lower bounds on EC2 calls: the reference topology (issue 11), and per instance.
REFERENCE_LOWER_BOUND = {"install": 10, "uninstall": 6}
PER_INSTANCE_LOWER_BOUND = {"install": 2, "uninstall": 2}
INPUTS = {"key_path": {"description": "the new key pair's private key file"}}


def _shared(aws_config: dict) -> dict:
    return {
        "keypair": {
            "type": "cloudify.aws.nodes.KeyPair",
            "properties": {"private_key_path": {"get_input": "key_path"}, "aws_config": aws_config},
        },
        "security_group": {
            "type": "cloudify.aws.nodes.SecurityGroup",
            "properties": {"description": "ssh and http", "rules": RULES, "aws_config": aws_config},
        },
    }


def _instance(aws_config: dict, relationships: list[tuple[str, str]], count: int = 1) -> dict:
    node = {
        "type": "cloudify.aws.nodes.Instance",
        "properties": {
            "image_id": IMAGE_ID,
            "instance_type": "t2.micro",
            "agent_config": NO_AGENT,
            "aws_config": aws_config,
        },
        "relationships": [
            {"type": f"cloudify.aws.relationships.instance_connected_to_{kind}", "target": target}
            for kind, target in relationships
        ],
    }
    if count != 1:
        node["capabilities"] = {"scalable": {"properties": {"default_instances": count}}}
    return node


def reference(aws_config: dict) -> dict:
    """A KeyPair, a SecurityGroup with 2 rules, an ElasticIP, and an Instance connected to all three."""
    return {
        **_shared(aws_config),
        "elastic_ip": {"type": "cloudify.aws.nodes.ElasticIP", "properties": {"aws_config": aws_config}},
        "vm": _instance(
            aws_config, [("keypair", "keypair"), ("security_group", "security_group"), ("elastic_ip", "elastic_ip")]
        ),
    }


def fleet(aws_config: dict, count: int, elastic_ips: int = 0) -> dict:
    """``count`` Instances sharing one KeyPair and one SecurityGroup, and ``elastic_ips`` unassociated ElasticIPs."""
    nodes = {
        **_shared(aws_config),
        "vm": _instance(aws_config, [("keypair", "keypair"), ("security_group", "security_group")], count),
    }
    if elastic_ips:
        nodes["addresses"] = {
            "type": "cloudify.aws.nodes.ElasticIP",
            "properties": {"aws_config": aws_config},
            "capabilities": {"scalable": {"properties": {"default_instances": elastic_ips}}},
        }
    return nodes
