"""check_drift for all four types and the elastic IP relationship, through the
built-in check_drift workflow of the local engine, which stores what each
operation returns in the node instance's system properties."""

from __future__ import annotations

import pytest

from tests.support import IMAGE_ID, REFERENCE_TYPES, types_resolver
from tests.test_preflight import topology


@pytest.fixture
def installed(deploy, tmp_path):
    """The reference topology, installed, with a tag on each node."""
    nodes = topology(tmp_path)
    for node in nodes.values():
        node.setdefault("properties", {})["tags"] = {"team": "web"}
    deployment = deploy(nodes)
    deployment.install()
    return deployment


def drift(deployment) -> dict[str, list | None]:
    """Runs check_drift; what each node instance's operation returned, by node, and by
    "source->target" for relationships."""
    deployment.execute("check_drift")
    found = {}
    for instance in deployment.env.storage.get_node_instances():
        system = instance.get("system_properties") or {}
        found[instance.node_id] = system["configuration_drift"]["result"]
        for target, result in (system.get("source_relationships_configuration_drift") or {}).items():
            found[f"{instance.node_id}->{target.rsplit('_', 1)[0]}"] = result["result"]
    return found


def change_properties(deployment, node_id: str, **changes) -> None:
    """What a deployment update does first: the node gets the new blueprint's properties."""
    storage = deployment.env.storage
    properties = {**storage.get_node(node_id).properties, **changes}
    storage._storage.update_node(storage.name, node_id, properties=properties)


def aws_id(deployment, node_id: str) -> str:
    return deployment.runtime(node_id)["aws_resource_id"]


def test_a_fresh_install_has_no_drift(installed):
    assert drift(installed) == {
        "keypair": None,
        "security_group": None,
        "elastic_ip": None,
        "vm": None,
        "vm->elastic_ip": None,
    }


def test_a_tag_changed_outside_cloudify_is_reported(installed, ec2):
    ec2.create_tags(Resources=[aws_id(installed, "vm")], Tags=[{"Key": "team", "Value": "ops"}])
    assert drift(installed)["vm"] == ["tag 'team' is 'ops', the blueprint says 'web'"]


def test_a_tag_added_or_removed_outside_cloudify_is_reported(installed, ec2):
    group_id = aws_id(installed, "security_group")
    ec2.delete_tags(Resources=[group_id], Tags=[{"Key": "team"}])
    ec2.create_tags(Resources=[group_id], Tags=[{"Key": "owner", "Value": "bob"}])
    assert drift(installed)["security_group"] == [
        "tag 'team' is missing (the blueprint says 'web')",
        "tag 'owner' ('bob') was added outside Cloudify",
    ]


def test_rules_changed_outside_cloudify_are_reported(installed, ec2):
    group_id = aws_id(installed, "security_group")
    ec2.revoke_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 3389, "ToPort": 3389, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}],
    )
    assert drift(installed)["security_group"] == [
        "ingress rule tcp 3389 with 10.0.0.0/8 was added outside Cloudify",
        "ingress rule tcp 22 with 0.0.0.0/0 was removed outside Cloudify",
    ]


def test_an_instance_type_changed_outside_cloudify_is_reported(installed, ec2):
    instance_id = aws_id(installed, "vm")
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "t3.small"})
    ec2.start_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    assert drift(installed)["vm"] == ["type is 't3.small', the blueprint says 't2.micro'"]


def test_a_stopped_instance_is_reported(installed, ec2):
    instance_id = aws_id(installed, "vm")
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    assert drift(installed)["vm"] == [f"instance {instance_id} is stopped, not running"]


def test_an_elastic_ip_moved_to_another_instance_is_reported_on_the_address_and_the_relationship(installed, ec2):
    instance_id = aws_id(installed, "vm")
    allocation_id = installed.runtime("elastic_ip")["allocation_id"]
    other = ec2.run_instances(ImageId=IMAGE_ID, InstanceType="t2.micro", MinCount=1, MaxCount=1)["Instances"][0]
    ec2.associate_address(AllocationId=allocation_id, InstanceId=other["InstanceId"], AllowReassociation=True)
    found = drift(installed)
    public_ip = aws_id(installed, "elastic_ip")
    moved = f"elastic IP {public_ip} is associated with instance {other['InstanceId']}, not with instance {instance_id}"
    assert found["elastic_ip"] == [moved]
    assert found["vm->elastic_ip"] == [moved]


def test_a_disassociated_elastic_ip_is_reported(installed, ec2):
    address = ec2.describe_addresses()["Addresses"][0]
    ec2.disassociate_address(AssociationId=address["AssociationId"])
    assert drift(installed)["vm->elastic_ip"] == [
        f"elastic IP {address['PublicIp']} is associated with nothing, not with instance {aws_id(installed, 'vm')}"
    ]


def test_a_key_pair_replaced_outside_cloudify_is_reported_by_its_fingerprint(installed, ec2):
    name = aws_id(installed, "keypair")
    recorded = installed.runtime("keypair")["key_fingerprint"]
    ec2.delete_key_pair(KeyName=name)
    replaced = ec2.create_key_pair(
        KeyName=name, TagSpecifications=[{"ResourceType": "key-pair", "Tags": [{"Key": "team", "Value": "web"}]}]
    )
    assert drift(installed)["keypair"] == [
        f"key pair {name} has fingerprint {replaced['KeyFingerprint']}, not {recorded} as created: it was replaced"
    ]


def test_a_deleted_resource_is_reported(installed, ec2):
    name = aws_id(installed, "keypair")
    ec2.delete_key_pair(KeyName=name)
    assert drift(installed)["keypair"] == [f"key pair {name} no longer exists"]


def test_an_external_resource_is_checked_for_existence_only(deploy, ec2, tmp_path):
    group_id = ec2.create_security_group(GroupName="theirs", Description="theirs")["GroupId"]
    nodes = {
        "group": {
            "type": "cloudify.aws.nodes.SecurityGroup",
            "properties": {"use_external_resource": True, "resource_id": group_id, "tags": {"team": "web"}},
        }
    }
    deployment = deploy(nodes)
    deployment.install()
    ec2.create_tags(Resources=[group_id], Tags=[{"Key": "owner", "Value": "them"}])
    assert drift(deployment) == {"group": None}
    ec2.delete_security_group(GroupId=group_id)
    assert drift(deployment) == {"group": [f"security group {group_id} no longer exists"]}


def test_a_fresh_group_with_every_kind_of_rule_has_no_drift(deploy, ec2):
    source = ec2.create_security_group(GroupName="source", Description="source")["GroupId"]
    rules = [
        {"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ip": "10.0.0.0/8"},
        {"ip_protocol": "udp", "from_port": 1000, "to_port": 2000, "cidr_ip": "2001:db8::/32"},
        {"ip_protocol": "icmp", "from_port": -1, "to_port": -1, "cidr_ip": "0.0.0.0/0"},
        {"ip_protocol": "tcp", "from_port": 443, "to_port": 443, "src_group_id": source},
        {"ip_protocol": "-1", "cidr_ip": "192.168.0.0/16"},
    ]
    egress = [{"ip_protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_ip": "0.0.0.0/0"}]
    nodes = {
        "group": {
            "type": "cloudify.aws.nodes.SecurityGroup",
            "properties": {"description": "all kinds", "rules": rules, "egress_rules": egress},
        }
    }
    deployment = deploy(nodes)
    deployment.install()
    assert drift(deployment) == {"group": None}


def test_security_groups_changed_on_the_instance_are_reported(installed, ec2):
    instance_id, group_id = aws_id(installed, "vm"), aws_id(installed, "security_group")
    other = ec2.create_security_group(GroupName="other", Description="other")["GroupId"]
    ec2.modify_instance_attribute(InstanceId=instance_id, Groups=[other])
    assert drift(installed)["vm"] == [
        f"security group {group_id} was removed from the instance",
        f"security group {other} was added to the instance",
    ]


def test_a_blueprint_that_now_says_otherwise_is_reported(installed):
    change_properties(installed, "vm", image_id="ami-1234567890abcdef0", instance_type="t3.small")
    assert drift(installed)["vm"] == [
        "type is 't2.micro', the blueprint says 't3.small'",
        "image is 'ami-12c6146b', the blueprint says 'ami-1234567890abcdef0'",
    ]


@pytest.mark.skipif(not REFERENCE_TYPES.is_dir(), reason="no ../shared/reference/cloudify-types here")
def test_the_official_types_check_drift_workflow_calls_the_plugins_operations(deploy, tmp_path, ec2):
    nodes = topology(tmp_path)
    deployment = deploy(nodes, dsl="cloudify_dsl_1_5", resolver=types_resolver(REFERENCE_TYPES / "types.yaml"))
    deployment.install()
    assert set(drift(deployment).values()) == {None}
    allocation_id = deployment.runtime("elastic_ip")["allocation_id"]
    ec2.create_tags(Resources=[allocation_id], Tags=[{"Key": "owner", "Value": "bob"}])
    assert drift(deployment)["elastic_ip"] == ["tag 'owner' ('bob') was added outside Cloudify"]
