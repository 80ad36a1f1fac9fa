"""The example blueprints install and uninstall through the local workflow
engine against the moto server, and leave nothing behind."""

from __future__ import annotations

import os
import re
import stat

import pytest
import yaml

from tests.support import IMAGE_ID, LIVE_STATES, ROOT, LocalDeployment, live_instances, types_resolver

EXAMPLES = ROOT / "examples"
# The demo's own settings: enough retries for the plugin's waiting policy.
TASK_RETRIES = 10


def not_terminated(ec2) -> list[dict]:
    return live_instances(ec2, (*LIVE_STATES, "shutting-down"))


def assert_emulator_empty(ec2) -> None:
    assert not_terminated(ec2) == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
    assert ec2.describe_addresses()["Addresses"] == []


@pytest.fixture
def example(tmp_path):
    """The main example, with the emulator inputs file (the endpoint comes from
    AWS_ENDPOINT_URL, as the test environment sets it)."""
    inputs = yaml.safe_load((EXAMPLES / "inputs-emulator.yaml").read_text())
    inputs["aws_config"] = {"region_name": "us-east-1"}
    inputs["key_path"] = str(tmp_path / "keys" / "example.pem")
    deployment = LocalDeployment(EXAMPLES / "blueprint.yaml", name="example", inputs=inputs, resolver=types_resolver())
    return deployment, inputs


def test_example_installs_everything_and_wires_it_together(example, ec2):
    deployment, inputs = example
    deployment.install(task_retries=TASK_RETRIES)

    outputs = deployment.env.outputs()
    instance_id = outputs["instance_id"]
    assert re.fullmatch(r"i-[0-9a-f]+", instance_id)
    (instance,) = not_terminated(ec2)
    assert instance["InstanceId"] == instance_id
    assert instance["State"]["Name"] == "running"
    assert instance["ImageId"] == IMAGE_ID
    assert instance["InstanceType"] == "t2.micro"
    assert instance["KeyName"] == "example"
    group_id = deployment.runtime("security_group")["aws_resource_id"]
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group_id]
    assert outputs["private_ip"] == instance["PrivateIpAddress"]

    (address,) = ec2.describe_addresses()["Addresses"]
    assert outputs["elastic_ip"] == address["PublicIp"]
    assert address["InstanceId"] == instance_id

    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert sorted(p["FromPort"] for p in group["IpPermissions"]) == [22, 80]

    assert outputs["key_path"] == inputs["key_path"]
    assert stat.S_IMODE(os.stat(inputs["key_path"]).st_mode) == 0o600
    for node_id in ("keypair", "security_group", "elastic_ip", "vm"):
        assert deployment.state(node_id) == "started"


def test_example_uninstall_leaves_nothing_behind(example, ec2):
    deployment, inputs = example
    deployment.install(task_retries=TASK_RETRIES)
    deployment.uninstall(task_retries=TASK_RETRIES)
    assert_emulator_empty(ec2)
    assert not os.path.exists(inputs["key_path"])
    for node_id in ("keypair", "security_group", "elastic_ip", "vm"):
        assert deployment.state(node_id) == "deleted"
        assert "aws_resource_id" not in deployment.runtime(node_id)


@pytest.fixture
def existing(tmp_path, ec2):
    """Resources made outside Cloudify, for the external-resources example."""
    key = ec2.create_key_pair(KeyName="existing-key")
    key_path = tmp_path / "existing-key.pem"
    key_path.write_text(key["KeyMaterial"])
    key_path.chmod(0o600)
    group_id = ec2.create_security_group(GroupName="existing-group", Description="made by hand")["GroupId"]
    (instance,) = ec2.run_instances(
        ImageId=IMAGE_ID,
        InstanceType="t2.micro",
        MinCount=1,
        MaxCount=1,
        KeyName="existing-key",
        SecurityGroupIds=[group_id],
    )["Instances"]
    address = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=instance["InstanceId"])
    return {
        "aws_config": {"region_name": "us-east-1"},
        "key_name": "existing-key",
        "key_path": str(key_path),
        "security_group": group_id,
        "instance_id": instance["InstanceId"],
        "elastic_ip": address["PublicIp"],
    }


def test_external_resources_example_adopts_and_releases_without_touching(existing, ec2):
    deployment = LocalDeployment(
        EXAMPLES / "external-resources.yaml", name="adopt", inputs=existing, resolver=types_resolver()
    )
    before = snapshot(ec2)
    deployment.install(task_retries=TASK_RETRIES)

    outputs = deployment.env.outputs()
    assert outputs["instance_id"] == existing["instance_id"]
    assert outputs["security_group_id"] == existing["security_group"]
    assert outputs["elastic_ip"] == existing["elastic_ip"]
    assert deployment.runtime("keypair")["aws_resource_id"] == "existing-key"
    assert snapshot(ec2) == before

    deployment.uninstall(task_retries=TASK_RETRIES)
    assert snapshot(ec2) == before
    assert os.path.exists(existing["key_path"])
    for node_id in ("keypair", "security_group", "elastic_ip", "vm"):
        assert "aws_resource_id" not in deployment.runtime(node_id)


def snapshot(ec2) -> dict:
    """What exists in the emulator, in a comparable form."""
    return {
        "instances": sorted((i["InstanceId"], i["State"]["Name"]) for i in not_terminated(ec2)),
        "keys": sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]),
        "groups": sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "addresses": sorted((a["PublicIp"], a.get("InstanceId")) for a in ec2.describe_addresses()["Addresses"]),
    }


def test_aws_inputs_file_has_placeholders_and_no_credentials():
    text = (EXAMPLES / "inputs-aws.yaml").read_text()
    inputs = yaml.safe_load(text)
    assert set(inputs) == {"aws_config", "image_id", "instance_type", "key_path"}
    assert "aws_access_key_id" not in inputs["aws_config"]
    assert "aws_secret_access_key" not in inputs["aws_config"]
    assert "REGION" in text and "ami-XXXXXXXXXXXXXXXXX" in text
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)


def test_emulator_inputs_match_the_blueprint_inputs():
    blueprint = yaml.safe_load((EXAMPLES / "blueprint.yaml").read_text())
    inputs = yaml.safe_load((EXAMPLES / "inputs-emulator.yaml").read_text())
    assert set(inputs) == set(blueprint["inputs"])
    assert inputs["image_id"] == IMAGE_ID
