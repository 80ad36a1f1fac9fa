"""The catalogue of refused inputs: each is refused as install would meet it
(validation, then create), naming the node, the property and the fix, before
any mutating call; and the node instance's delete then gets through."""

from __future__ import annotations

import os

import pytest
from cloudify.exceptions import NonRecoverableError, WorkflowFailed

from ec2 import elasticip, instance, keypair, securitygroup
from tests.support import IMAGE_ID

SSH = {"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ip": "0.0.0.0/0"}
LIFECYCLES = {
    # type: (validation, create, deletes in uninstall order)
    "KeyPair": (keypair.creation_validation, keypair.create, (keypair.delete,)),
    "SecurityGroup": (securitygroup.creation_validation, securitygroup.create, (securitygroup.delete,)),
    "Instance": (instance.creation_validation, instance.run_instances, (instance.stop, instance.terminate)),
    "ElasticIP": (elasticip.creation_validation, elasticip.allocate, (elasticip.release,)),
}


def defaults(kind: str, folder) -> dict:
    base = {"use_external_resource": False, "resource_id": "", "aws_config": {}, "tags": {}}
    return {
        "KeyPair": {**base, "private_key_path": str(folder / "keys" / "k.pem")},
        "SecurityGroup": {**base, "description": "", "rules": [SSH], "egress_rules": [], "vpc_id": ""},
        "Instance": {
            **base,
            "image_id": IMAGE_ID,
            "instance_type": "t3.micro",
            "parameters": {},
            "agent_config": {"install_method": "none"},
        },
        "ElasticIP": base,
    }[kind]


def existing_file(folder, mode=0o600):
    path = folder / "exists.pem"
    path.write_text("x")
    path.chmod(mode)
    return str(path)


def under_a_file(folder):
    (folder / "plain-file").write_text("")
    return str(folder / "plain-file" / "k.pem")


def rule(**changes):
    return [{**SSH, **changes}]


# (type, property overrides (a callable gets the tmp folder), the property the error names)
CATALOGUE = [
    ("KeyPair", {"private_key_path": ""}, "private_key_path"),
    ("KeyPair", {"private_key_path": existing_file}, "private_key_path"),
    ("KeyPair", {"private_key_path": under_a_file}, "private_key_path"),
    ("KeyPair", {"resource_id": "bad\x01name"}, "resource_id"),
    ("KeyPair", {"resource_id": "k" * 300}, "resource_id"),
    ("KeyPair", {"use_external_resource": True}, "resource_id"),
    ("KeyPair", {"use_external_resource": True, "resource_id": "k"}, "private_key_path"),
    (
        "KeyPair",
        {"use_external_resource": True, "resource_id": "k", "private_key_path": lambda f: existing_file(f, 0o644)},
        "private_key_path",
    ),
    (
        "KeyPair",
        {"use_external_resource": True, "resource_id": "nope", "private_key_path": existing_file},
        "resource_id",
    ),
    ("KeyPair", {"public_key_material": "not a key"}, "public_key_material"),
    ("KeyPair", {"public_key_material": "ssh-ed25519 AAAA", "public_key_path": "/x.pub"}, "public_key_path"),
    ("KeyPair", {"public_key_path": "/nonexistent/key.pub"}, "public_key_path"),
    ("KeyPair", {"tags": ["team"]}, "tags"),
    ("KeyPair", {"tags": {"aws:owner": "me"}}, "tags"),
    ("KeyPair", {"tags": {"team": {"nested": 1}}}, "tags"),
    ("KeyPair", {"aws_config": ["region_name"]}, "aws_config"),
    ("KeyPair", {"aws_config": {"region": "us-east-1"}}, "aws_config"),
    ("KeyPair", {"aws_config": {"retry_mode": "eager"}}, "aws_config"),
    ("KeyPair", {"aws_config": {"max_attempts": "many"}}, "aws_config.max_attempts"),
    ("KeyPair", {"aws_config": {"is_secure": "perhaps"}}, "aws_config.is_secure"),
    ("KeyPair", {"aws_config": {"proxy_user": "me"}}, "aws_config"),
    ("KeyPair", {"use_external_resource": "maybe"}, "use_external_resource"),
    ("SecurityGroup", {"rules": "tcp:22"}, "rules"),
    ("SecurityGroup", {"rules": ["tcp:22"]}, "rules[0]"),
    ("SecurityGroup", {"rules": rule(ip_protocol="tcpp")}, "rules[0].ip_protocol"),
    ("SecurityGroup", {"rules": rule(from_port=70000, to_port=70000)}, "rules[0].from_port"),
    ("SecurityGroup", {"rules": rule(from_port="ssh")}, "rules[0].from_port"),
    ("SecurityGroup", {"rules": rule(from_port=80, to_port=22)}, "rules[0].from_port"),
    ("SecurityGroup", {"rules": rule(cidr_ip="300.0.0.0/8")}, "rules[0].cidr_ip"),
    ("SecurityGroup", {"rules": rule(cidr_ip="10.0.0.1/8")}, "rules[0].cidr_ip"),
    ("SecurityGroup", {"rules": rule(src_group_id="sg-12345678")}, "rules[0]"),
    ("SecurityGroup", {"rules": [{"ip_protocol": "tcp", "from_port": 22, "to_port": 22}]}, "rules[0]"),
    ("SecurityGroup", {"rules": rule(cidr="0.0.0.0/0")}, "rules[0]"),
    (
        "SecurityGroup",
        {"rules": [{**rule()[0], "cidr_ip": None, "src_group_id": "sg-12345678"}]},
        "rules[0].src_group_id",
    ),
    (
        "SecurityGroup",
        {"rules": [{**rule()[0], "cidr_ip": None, "src_group_id": "no-such-group"}]},
        "rules[0].src_group_id",
    ),
    ("SecurityGroup", {"egress_rules": rule(ip_protocol="udp", from_port=-5)}, "egress_rules[0].from_port"),
    ("SecurityGroup", {"vpc_id": "my-vpc"}, "vpc_id"),
    ("SecurityGroup", {"vpc_id": "vpc-12345678"}, "vpc_id"),
    ("SecurityGroup", {"description": "d" * 300}, "description"),
    ("SecurityGroup", {"resource_id": "sg-web"}, "resource_id"),
    ("SecurityGroup", {"resource_id": "default"}, "resource_id"),
    ("SecurityGroup", {"use_external_resource": True, "resource_id": "no-such-group"}, "resource_id"),
    ("SecurityGroup", {"use_external_resource": True, "resource_id": ""}, "resource_id"),
    ("SecurityGroup", {"tags": "team=qa"}, "tags"),
    ("Instance", {"image_id": ""}, "image_id"),
    ("Instance", {"image_id": "ubuntu"}, "image_id"),
    ("Instance", {"image_id": "ami-0000000000000dead"}, "image_id"),
    ("Instance", {"instance_type": ""}, "instance_type"),
    ("Instance", {"instance_type": "huge"}, "instance_type"),
    ("Instance", {"instance_type": "t3.gigantic"}, "instance_type"),
    ("Instance", {"parameters": ["key_name"]}, "parameters"),
    ("Instance", {"parameters": {"keyname": "k"}}, "parameters"),
    ("Instance", {"parameters": {"MaxCount": 3}}, "parameters"),
    ("Instance", {"parameters": {"security_group_ids": "sg-12345678"}}, "parameters.security_group_ids"),
    ("Instance", {"parameters": {"security_groups": [""]}}, "parameters.security_groups"),
    ("Instance", {"parameters": {"key_name": "no-such-key"}}, "parameters.key_name"),
    ("Instance", {"parameters": {"subnet_id": "subnet-0000dead"}}, "parameters.subnet_id"),
    ("Instance", {"parameters": {"ebs_optimized": "maybe"}}, "parameters.ebs_optimized"),
    ("Instance", {"parameters": {"image_id": "ami-22222222"}}, "parameters.image_id"),
    ("Instance", {"parameters": {"MetadataOptions": {"HttpTokens": 5}}}, "parameters"),
    ("Instance", {"parameters": {"user_data": {"not": "text"}}}, "parameters.user_data"),
    ("Instance", {"parameters": {"TagSpecifications": "Name=x"}}, "parameters.TagSpecifications"),
    (
        "Instance",
        {"parameters": {"subnet_id": "subnet-1111aaaa", "SubnetId": "subnet-2222bbbb"}},
        "parameters.SubnetId",
    ),
    ("Instance", {"wait_timeout": "soon"}, "wait_timeout"),
    ("Instance", {"wait_interval": -1}, "wait_interval"),
    ("Instance", {"retry_after": 0}, "retry_after"),
    ("Instance", {"use_external_resource": True, "resource_id": "i-xyz"}, "resource_id"),
    ("Instance", {"use_external_resource": True, "resource_id": "i-0123456789abcdef0"}, "resource_id"),
    ("Instance", {"use_external_resource": True, "resource_id": ""}, "resource_id"),
    ("Instance", {"tags": {"": "empty name"}}, "tags"),
    ("Instance", {"aws_config": {"region_name": "us-nowhere-9", "endpoint_url": ""}}, "aws_config"),
    ("ElasticIP", {"resource_id": "not-an-ip"}, "resource_id"),
    ("ElasticIP", {"use_external_resource": True}, "resource_id"),
    ("ElasticIP", {"use_external_resource": True, "resource_id": "203.0.113.10"}, "resource_id"),
    ("ElasticIP", {"use_external_resource": True, "resource_id": "eipalloc-12345678"}, "resource_id"),
    ("ElasticIP", {"wait_timeout": "later"}, "wait_timeout"),
    ("ElasticIP", {"tags": ["x"]}, "tags"),
    ("ElasticIP", {"aws_config": {"connect_timeout": "soon"}}, "aws_config.connect_timeout"),
    ("ElasticIP", {"aws_config": {"propagation_timeout": "a while"}}, "aws_config"),
    ("SecurityGroup", {"aws_config": {"propagation_timeout": -1}}, "aws_config"),
]


def test_the_catalogue_has_at_least_sixty_cases():
    assert len(CATALOGUE) >= 60


@pytest.mark.parametrize(
    "kind, overrides, prop",
    CATALOGUE,
    ids=[f"{kind}-{index}-{prop}" for index, (kind, _, prop) in enumerate(CATALOGUE)],
)
def test_a_bad_input_is_refused_before_any_mutating_call_and_delete_then_gets_through(
    make_ctx, calls, ec2, tmp_path, monkeypatch, kind, overrides, prop
):
    if "us-nowhere" in str(overrides):
        monkeypatch.delenv("AWS_ENDPOINT_URL")
    ec2.create_security_group(GroupName="default-taken", Description="x")
    properties = {**defaults(kind, tmp_path)}
    properties.update({key: value(tmp_path) if callable(value) else value for key, value in overrides.items()})
    if properties.get("resource_id") == "default":
        properties["resource_id"] = "default-taken"
    ctx = make_ctx(properties, node_id="node", instance_id="node_1")
    validate, create, deletes = LIFECYCLES[kind]
    with pytest.raises(NonRecoverableError) as refused:
        validate(ctx=ctx)
        create(ctx=ctx)
    message = str(refused.value)
    assert message.startswith("node 'node': ")
    assert f"'{prop}" in message and "Fix:" in message
    assert calls.mutating == []
    for delete in deletes:
        delete(ctx=ctx)
    assert calls.mutating == []
    assert os.listdir(tmp_path) in ([], ["exists.pem"], ["plain-file"])


# --- through the workflow engine ---------------------------------------------------


@pytest.mark.parametrize(
    "bad_node",
    [
        {"type": "cloudify.aws.nodes.ElasticIP", "properties": {"aws_config": {"region": "us-east-1"}}},
        {
            "type": "cloudify.aws.nodes.ElasticIP",
            "properties": {"use_external_resource": True, "resource_id": "203.0.113.9"},
        },
        {
            "type": "cloudify.aws.nodes.Instance",
            "properties": {
                "image_id": "ami-12345678",
                "instance_type": "nope",
                "agent_config": {"install_method": "none"},
            },
        },
    ],
    ids=["bad aws_config", "missing external address", "bad instance type"],
)
def test_after_a_refused_install_uninstall_succeeds_and_leaves_nothing(deploy, tmp_path, ec2, bad_node):
    deployment = deploy(
        {
            "key": {"type": "cloudify.aws.nodes.KeyPair", "properties": {"private_key_path": str(tmp_path / "k.pem")}},
            "bad": {**bad_node, "relationships": [{"type": "cloudify.relationships.depends_on", "target": "key"}]},
        }
    )
    with pytest.raises(WorkflowFailed):
        deployment.install()
    deployment.uninstall()
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert ec2.describe_addresses()["Addresses"] == []
