"""A KeyPair plus SecurityGroup blueprint, installed and uninstalled through
cloudify.workflows.local against the moto server."""

import os
import stat
from pathlib import Path

import pytest
from cloudify.exceptions import WorkflowFailed

from tests.support import die_once_after


def key_and_group(folder: Path) -> tuple[Path, dict]:
    """The private key's path and the node templates: a KeyPair and a SecurityGroup with two rules."""
    key_path = folder / "keys" / "demo-key.pem"
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


@pytest.fixture
def blueprint(tmp_path):
    return key_and_group(tmp_path)


@pytest.mark.shared_deployment
class TestTheInstalledBlueprint:
    """Read-only checks of one installed key pair and security group."""

    @pytest.fixture(scope="class")
    def installed(self, deploy_once):
        key_path, nodes = key_and_group(deploy_once.folder)
        deployment = deploy_once(nodes)
        deployment.install()
        return key_path, deployment

    def test_install_creates_the_key_pair_and_writes_its_private_key(self, installed, ec2):
        key_path, deployment = installed
        assert deployment.runtime("key")["aws_resource_id"] == "demo-key"
        assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["demo-key"]
        assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
        assert "PRIVATE KEY" in key_path.read_text()

    def test_install_creates_the_security_group_with_its_rules(self, installed, ec2):
        _, deployment = installed
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


def test_a_bad_rule_fails_the_install_before_the_group_is_created(deploy, blueprint, ec2, calls):
    _, nodes = blueprint
    nodes["group"]["properties"]["rules"].append({"ip_protocol": "tcp", "from_port": 22, "to_port": 22})
    deployment = deploy(nodes)
    with pytest.raises(WorkflowFailed):
        deployment.install()
    assert not [name for name in calls.mutating if "SecurityGroup" in name]
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]


def test_after_a_failed_install_uninstall_removes_what_other_nodes_made(deploy, blueprint, ec2):
    key_path, nodes = blueprint
    nodes["group"]["properties"]["rules"][0]["from_port"] = 99999
    deployment = deploy(nodes)
    with pytest.raises(WorkflowFailed):
        deployment.install()
    deployment.uninstall()
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert not key_path.exists()


def test_an_existing_key_path_fails_the_install_before_the_key_pair_is_created(deploy, blueprint, ec2, calls):
    key_path, nodes = blueprint
    key_path.parent.mkdir()
    key_path.write_text("precious")
    deployment = deploy({"key": nodes["key"]})
    with pytest.raises(WorkflowFailed):
        deployment.install()
    assert calls.mutating == []
    assert key_path.read_text() == "precious"


def test_the_failure_message_names_the_node_the_property_and_the_fix(deploy, blueprint, capsys):
    _, nodes = blueprint
    nodes["group"]["properties"]["rules"][0]["cidr_ip"] = "0.0.0.0"
    deployment = deploy(nodes)
    with pytest.raises(WorkflowFailed):
        deployment.install()
    messages = capsys.readouterr().out
    assert "node 'group': property 'rules[0].cidr_ip'" in messages
    assert "Fix:" in messages


def test_install_run_again_after_a_create_that_died_replaces_the_half_made_group(deploy, blueprint, ec2, monkeypatch):
    _, nodes = blueprint
    deployment = deploy({"group": nodes["group"]})
    die_once_after(monkeypatch, "CreateSecurityGroup")
    with pytest.raises(WorkflowFailed):
        deployment.install()
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == "web"]

    deployment.install()
    (group,) = [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == "web"]
    assert deployment.runtime("group")["aws_resource_id"] == group["GroupId"]
    assert len(group["IpPermissions"]) == 2
