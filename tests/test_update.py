"""In-place update (cloudify.interfaces.lifecycle.update) through
execute_operation: tags, security group rules and the instance type change
with the calls counted, and no resource is replaced."""

from __future__ import annotations

import pytest
from cloudify.exceptions import WorkflowFailed

from ec2 import constants
from tests.test_drift import change_properties, drift
from tests.test_preflight import HTTP, SSH, topology

UPDATE = "cloudify.interfaces.lifecycle.update"
NODES = ["keypair", "security_group", "elastic_ip", "vm"]


@pytest.fixture
def installed(deploy, tmp_path):
    """The reference topology, installed, with two tags on each node."""
    nodes = topology(tmp_path)
    for node in nodes.values():
        node.setdefault("properties", {})["tags"] = {"team": "web", "env": "dev"}
    deployment = deploy(nodes)
    deployment.install()
    return deployment


def ids(deployment) -> dict[str, str]:
    return {node: deployment.runtime(node)["aws_resource_id"] for node in NODES}


def tags_of(ec2, deployment) -> dict[str, dict]:
    found = {}
    for node, resource_id in ids(deployment).items():
        if node == "keypair":
            resource_id = ec2.describe_key_pairs(KeyNames=[resource_id])["KeyPairs"][0]["KeyPairId"]
        elif node == "elastic_ip":
            resource_id = deployment.runtime(node)["allocation_id"]
        described = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource_id]}])["Tags"]
        found[node] = {tag["Key"]: tag["Value"] for tag in described}
    return found


def ingress(ec2, group_id: str) -> list[tuple]:
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return sorted(
        (rule["IpProtocol"], rule.get("FromPort"), r["CidrIp"])
        for rule in group["IpPermissions"]
        for r in rule["IpRanges"]
    )


def test_update_sets_the_new_tags_on_every_type_in_place(installed, ec2, calls):
    before = ids(installed)
    for node in NODES:
        change_properties(installed, node, tags={"team": "ops", "tier": "front"})
    installed.execute_operation(UPDATE, NODES)
    for node, tags in tags_of(ec2, installed).items():
        assert {key: tags[key] for key in ("team", "tier")} == {"team": "ops", "tier": "front"}, node
        assert "env" not in tags, node
        assert constants.TAG_NODE_INSTANCE_ID in tags, node
    assert sorted(calls.mutating) == ["CreateTags"] * 4 + ["DeleteTags"] * 4
    assert ids(installed) == before


def test_update_keeps_the_generated_name_tag(installed, ec2):
    change_properties(installed, "vm", tags={})
    installed.execute_operation(UPDATE, ["vm"])
    tags = tags_of(ec2, installed)["vm"]
    assert "team" not in tags and tags["Name"].startswith("vm_")


def test_update_changes_security_group_rules_by_one_authorize_and_one_revoke(installed, ec2, calls):
    group_id = installed.runtime("security_group")["aws_resource_id"]
    change_properties(installed, "security_group", rules=[{**SSH, "cidr_ip": "10.0.0.0/8"}, HTTP])
    installed.execute_operation(UPDATE, ["security_group"])
    assert ingress(ec2, group_id) == [("tcp", 22, "10.0.0.0/8"), ("tcp", 80, "0.0.0.0/0")]
    assert calls.mutating == ["AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress"]
    assert installed.runtime("security_group")["aws_resource_id"] == group_id


def test_update_changes_the_instance_type_by_stop_modify_and_start(installed, ec2, calls):
    instance_id = installed.runtime("vm")["aws_resource_id"]
    change_properties(installed, "vm", instance_type="t3.small")
    installed.execute_operation(UPDATE, ["vm"])
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    assert reservation["Instances"][0]["InstanceType"] == "t3.small"
    assert reservation["Instances"][0]["State"]["Name"] == "running"
    assert calls.mutating == ["StopInstances", "ModifyInstanceAttribute", "StartInstances"]
    assert installed.runtime("vm")["aws_resource_id"] == instance_id
    assert "restart_after_resize" not in installed.runtime("vm")


def test_update_leaves_an_instance_that_was_stopped_stopped(installed, ec2):
    instance_id = installed.runtime("vm")["aws_resource_id"]
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    change_properties(installed, "vm", instance_type="t3.small")
    installed.execute_operation(UPDATE, ["vm"])
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    assert (reservation["Instances"][0]["InstanceType"], reservation["Instances"][0]["State"]["Name"]) == (
        "t3.small",
        "stopped",
    )


def test_update_with_nothing_changed_changes_nothing(installed, calls):
    installed.execute_operation(UPDATE, NODES)
    assert calls.mutating == []


def test_update_refuses_a_new_image_which_needs_a_new_instance(installed, calls, capsys):
    change_properties(installed, "vm", image_id="ami-1234567890abcdef0")
    with pytest.raises(WorkflowFailed):
        installed.execute_operation(UPDATE, ["vm"])
    assert "image_id changed from 'ami-12c6146b' to 'ami-1234567890abcdef0', which needs a new instance" in (
        capsys.readouterr().out
    )
    assert calls.mutating == []


def test_update_undoes_what_check_drift_found(installed, ec2):
    group_id = installed.runtime("security_group")["aws_resource_id"]
    ec2.create_tags(Resources=[group_id], Tags=[{"Key": "team", "Value": "ops"}])
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}],
    )
    assert drift(installed)["security_group"]
    installed.execute_operation(UPDATE, ["security_group"])
    assert drift(installed)["security_group"] is None


def test_update_refuses_a_new_group_description_which_needs_a_new_group(installed, calls, capsys):
    change_properties(installed, "security_group", description="something else")
    with pytest.raises(WorkflowFailed):
        installed.execute_operation(UPDATE, ["security_group"])
    assert "description changed from 'ssh and http' to 'something else', which needs a new group" in (
        capsys.readouterr().out
    )
    assert calls.mutating == []
