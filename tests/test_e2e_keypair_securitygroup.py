"""A KeyPair plus SecurityGroup blueprint, installed and uninstalled through
cloudify.workflows.local against the moto server."""

import os
import stat

import pytest


@pytest.fixture
def blueprint(tmp_path):
    key_path = tmp_path / "keys" / "demo-key.pem"
    return key_path, {
        "key": {
            "type": "cloudify.aws.nodes.KeyPair",
            "properties": {"private_key_path": str(key_path), "tags": {"team": "qa"}},
        },
        "group": {
            "type": "cloudify.aws.nodes.SecurityGroup",
            "properties": {
                "resource_id": "web",
                "description": "web servers",
                "rules": [
                    {"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ip": "0.0.0.0/0"},
                    {"ip_protocol": "tcp", "from_port": 80, "to_port": 80, "cidr_ip": "10.0.0.0/8"},
                ],
            },
        },
    }


def test_install_creates_the_key_pair_and_writes_its_private_key(deploy, blueprint, ec2):
    key_path, nodes = blueprint
    deployment = deploy(nodes)
    deployment.install()
    assert deployment.runtime("key")["aws_resource_id"] == "demo-key"
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["demo-key"]
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert "PRIVATE KEY" in key_path.read_text()


def test_install_creates_the_security_group_with_its_rules(deploy, blueprint, ec2):
    _, nodes = blueprint
    deployment = deploy(nodes)
    deployment.install()
    group_id = deployment.runtime("group")["aws_resource_id"]
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert group["GroupName"] == "web"
    assert group["Description"] == "web servers"
    ports = sorted((p["FromPort"], p["IpRanges"][0]["CidrIp"]) for p in group["IpPermissions"])
    assert ports == [(22, "0.0.0.0/0"), (80, "10.0.0.0/8")]


def test_uninstall_leaves_nothing_behind(deploy, blueprint, ec2):
    key_path, nodes = blueprint
    deployment = deploy(nodes)
    deployment.install()
    deployment.uninstall()
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
    assert not key_path.exists()
    assert "aws_resource_id" not in deployment.runtime("key")
    assert "aws_resource_id" not in deployment.runtime("group")
