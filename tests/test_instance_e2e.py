"""cloudify.aws.nodes.Instance through cloudify.workflows.local against the
moto server: install, uninstall, stop and start, external instances, a crash
during create, heal, and the zero-retry install."""

from __future__ import annotations

import base64
import email
from pathlib import Path

import pytest
import yaml
from cloudify import context as cloudify_context
from cloudify.exceptions import WorkflowFailed

from ec2 import constants
from tests.support import IMAGE_ID, die_once_after, instance_node, live_instances

KEYPAIR = "cloudify.aws.relationships.instance_connected_to_keypair"
SECURITY_GROUP = "cloudify.aws.relationships.instance_connected_to_security_group"


def full_blueprint_in(folder: Path) -> dict:
    """A KeyPair, a SecurityGroup and an Instance connected to both."""
    return {
        "key": {
            "type": "cloudify.aws.nodes.KeyPair",
            "properties": {"private_key_path": str(folder / "keys" / "server-key.pem")},
        },
        "group": {
            "type": "cloudify.aws.nodes.SecurityGroup",
            "properties": {
                "resource_id": "servers",
                "description": "servers",
                "rules": [{"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ip": "0.0.0.0/0"}],
            },
        },
        "server": instance_node((KEYPAIR, "key"), (SECURITY_GROUP, "group")),
    }


@pytest.fixture
def full_blueprint(tmp_path):
    return full_blueprint_in(tmp_path)


@pytest.fixture
def retries(monkeypatch):
    """Counts every ctx.operation.retry the plugin asks for."""
    asked = []
    original = cloudify_context.OperationContext.retry

    def counting(self, *args, **kwargs):
        asked.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cloudify_context.OperationContext, "retry", counting)
    return asked


def describe(ec2, instance_id: str) -> dict:
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservation["Instances"][0]


def launch(ec2) -> str:
    return ec2.run_instances(ImageId=IMAGE_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]


# --- install ------------------------------------------------------------------


@pytest.mark.shared_deployment
class TestTheInstalledFullBlueprint:
    """Read-only checks of one installed full blueprint."""

    @pytest.fixture(scope="class")
    def deployment(self, deploy_once):
        deployment = deploy_once(full_blueprint_in(deploy_once.folder))
        deployment.install()
        return deployment

    def test_install_leaves_the_instance_running(self, deployment, ec2):
        instance = describe(ec2, deployment.runtime("server")["aws_resource_id"])
        assert instance["State"]["Name"] == "running"

    def test_install_launches_the_instance_with_the_connected_key_pair(self, deployment, ec2):
        instance = describe(ec2, deployment.runtime("server")["aws_resource_id"])
        assert instance["KeyName"] == deployment.runtime("key")["aws_resource_id"] == "server-key"

    def test_install_puts_the_instance_in_the_connected_security_group(self, deployment, ec2):
        instance = describe(ec2, deployment.runtime("server")["aws_resource_id"])
        assert deployment.runtime("group")["aws_resource_id"] in [g["GroupId"] for g in instance["SecurityGroups"]]

    def test_start_sets_the_address_runtime_properties_from_describe_instances(self, deployment, ec2):
        runtime = deployment.runtime("server")
        instance = describe(ec2, runtime["aws_resource_id"])
        assert instance["PublicIpAddress"] and instance["PrivateDnsName"]
        assert {name: runtime[name] for name in constants.INSTANCE_NETWORK_PROPERTIES} == {
            "ip": instance["PrivateIpAddress"],
            "private_dns_name": instance["PrivateDnsName"],
            "public_dns_name": instance["PublicDnsName"],
            "public_ip_address": instance["PublicIpAddress"],
        }

    def test_create_sets_the_reservation_id(self, deployment, ec2):
        runtime = deployment.runtime("server")
        (reservation,) = ec2.describe_instances(InstanceIds=[runtime["aws_resource_id"]])["Reservations"]
        assert runtime["reservation_id"] == reservation["ReservationId"]


def test_create_tags_the_instance_with_its_name_tags_and_owner(deploy, ec2):
    deployment = deploy({"server": instance_node(tags={"team": "qa"})})
    deployment.install()
    (node_instance,) = deployment.instances("server")
    tags = {t["Key"]: t["Value"] for t in describe(ec2, deployment.runtime("server")["aws_resource_id"])["Tags"]}
    assert tags == {
        "Name": node_instance.id,
        "team": "qa",
        constants.TAG_DEPLOYMENT_ID: "test",
        constants.TAG_NODE_INSTANCE_ID: node_instance.id,
    }


def test_a_name_in_the_tags_property_names_the_instance(deploy, ec2):
    deployment = deploy({"server": instance_node(tags={"Name": "web-1"})})
    deployment.install()
    tags = {t["Key"]: t["Value"] for t in describe(ec2, deployment.runtime("server")["aws_resource_id"])["Tags"]}
    assert tags["Name"] == "web-1"


def test_a_full_install_needs_no_workflow_retry(deploy, full_blueprint, retries, calls):
    deployment = deploy(full_blueprint)
    deployment.install(task_retries=0)
    assert retries == []
    assert calls.mutating.count("RunInstances") == 1


# --- uninstall ----------------------------------------------------------------


def test_uninstall_leaves_no_instance_key_pair_or_group(deploy, full_blueprint, ec2):
    deployment = deploy(full_blueprint)
    deployment.install()
    deployment.uninstall()
    assert live_instances(ec2) == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]


def test_delete_waits_for_termination_and_pops_every_runtime_property(deploy, ec2):
    deployment = deploy({"server": instance_node()})
    deployment.install()
    instance_id = deployment.runtime("server")["aws_resource_id"]
    deployment.uninstall()
    assert describe(ec2, instance_id)["State"]["Name"] == "terminated"
    assert deployment.runtime("server") == {}


# --- stop and start -------------------------------------------------------------


def test_stop_stops_the_instance_and_unsets_the_addresses(deploy, ec2):
    deployment = deploy({"server": instance_node()})
    deployment.install()
    instance_id = deployment.runtime("server")["aws_resource_id"]
    deployment.execute_operation("cloudify.interfaces.lifecycle.stop", ["server"])
    assert describe(ec2, instance_id)["State"]["Name"] == "stopped"
    runtime = deployment.runtime("server")
    assert not set(constants.INSTANCE_NETWORK_PROPERTIES) & set(runtime)
    assert runtime["aws_resource_id"] == instance_id


def test_start_after_stop_starts_the_instance_and_sets_the_addresses_again(deploy, ec2):
    deployment = deploy({"server": instance_node()})
    deployment.install()
    instance_id = deployment.runtime("server")["aws_resource_id"]
    deployment.execute_operation("cloudify.interfaces.lifecycle.stop", ["server"])
    deployment.execute_operation("cloudify.interfaces.lifecycle.start", ["server"])
    instance = describe(ec2, instance_id)
    assert instance["State"]["Name"] == "running"
    assert deployment.runtime("server")["ip"] == instance["PrivateIpAddress"]
    assert deployment.runtime("server")["public_ip_address"] == instance["PublicIpAddress"]


# --- external instances -------------------------------------------------------


def test_install_adopts_an_external_instance_without_launching_one(deploy, ec2, calls):
    instance_id = launch(ec2)
    deployment = deploy({"server": instance_node(use_external_resource=True, resource_id=instance_id)})
    deployment.install()
    runtime = deployment.runtime("server")
    assert runtime["aws_resource_id"] == instance_id
    assert runtime["external_resource"] is True
    assert runtime["ip"] == describe(ec2, instance_id)["PrivateIpAddress"]
    assert "RunInstances" not in calls.operations


def test_uninstall_leaves_an_external_instance_running(deploy, ec2, calls):
    instance_id = launch(ec2)
    deployment = deploy({"server": instance_node(use_external_resource=True, resource_id=instance_id)})
    deployment.install()
    deployment.uninstall()
    assert describe(ec2, instance_id)["State"]["Name"] == "running"
    assert calls.mutating == []
    assert deployment.runtime("server") == {}


def test_an_external_instance_in_an_external_group_calls_nothing_that_changes_aws(deploy, ec2, calls):
    instance_id = launch(ec2)
    group_id = ec2.create_security_group(GroupName="existing", Description="existing")["GroupId"]
    deployment = deploy(
        {
            "group": {
                "type": "cloudify.aws.nodes.SecurityGroup",
                "properties": {"use_external_resource": True, "resource_id": group_id},
            },
            "server": instance_node((SECURITY_GROUP, "group"), use_external_resource=True, resource_id=instance_id),
        }
    )
    deployment.install()
    deployment.uninstall()
    assert calls.mutating == []
    assert describe(ec2, instance_id)["State"]["Name"] == "running"


def test_an_external_instance_connected_to_a_new_security_group_fails_the_install(deploy, ec2, calls, capsys):
    instance_id = launch(ec2)
    groups_before = describe(ec2, instance_id)["SecurityGroups"]
    deployment = deploy(
        {
            "group": {"type": "cloudify.aws.nodes.SecurityGroup", "properties": {"description": "new"}},
            "server": instance_node((SECURITY_GROUP, "group"), use_external_resource=True, resource_id=instance_id),
        }
    )
    with pytest.raises(WorkflowFailed):
        deployment.install()
    out = capsys.readouterr().out
    assert "Task failed 'ec2.instance.creation_validation' -> node 'server': it is an existing instance" in out
    assert "Fix: make 'group' external too" in out
    assert "aws_resource_id" not in deployment.runtime("server")
    assert not [name for name in calls.mutating if "Instance" in name]
    assert describe(ec2, instance_id)["SecurityGroups"] == groups_before


def test_install_fails_when_the_external_instance_does_not_exist(deploy, calls, capsys):
    deployment = deploy({"server": instance_node(use_external_resource=True, resource_id="i-0123456789abcdef0")})
    with pytest.raises(WorkflowFailed):
        deployment.install()
    out = capsys.readouterr().out
    assert (
        "Task failed 'ec2.instance.creation_validation' -> node 'server': property 'resource_id' "
        "names instance 'i-0123456789abcdef0', which does not exist"
    ) in out
    assert "DescribeInstances" in calls.operations and "RunInstances" not in calls.operations
    assert "aws_resource_id" not in deployment.runtime("server")


def test_install_fails_on_a_malformed_external_instance_id_without_asking_aws(deploy, calls, capsys):
    deployment = deploy({"server": instance_node(use_external_resource=True, resource_id="i-xyz")})
    with pytest.raises(WorkflowFailed):
        deployment.install()
    assert "-> node 'server': property 'resource_id' is 'i-xyz', not an instance id" in capsys.readouterr().out
    assert calls.operations == []


# --- crash and heal -----------------------------------------------------------


def create_dies_right_after_run_instances(deployment, monkeypatch) -> None:
    """Runs create in a process that "dies" before recording the instance id."""
    died = die_once_after(monkeypatch, "RunInstances")
    with pytest.raises(WorkflowFailed):
        deployment.execute_operation("cloudify.interfaces.lifecycle.create", ["server"])
    assert died


def test_create_run_again_after_a_crash_adopts_the_launched_instance(deploy, ec2, monkeypatch):
    deployment = deploy({"server": instance_node()})
    create_dies_right_after_run_instances(deployment, monkeypatch)
    assert "aws_resource_id" not in deployment.runtime("server")
    assert len(live_instances(ec2)) == 1

    deployment.execute_operation("cloudify.interfaces.lifecycle.create", ["server"])
    (instance,) = live_instances(ec2)
    assert deployment.runtime("server")["aws_resource_id"] == instance["InstanceId"]


def test_delete_after_a_crash_terminates_the_unrecorded_instance(deploy, ec2, monkeypatch):
    deployment = deploy({"server": instance_node()})
    create_dies_right_after_run_instances(deployment, monkeypatch)
    deployment.execute_operation("cloudify.interfaces.lifecycle.delete", ["server"])
    assert live_instances(ec2) == []


def test_the_uninstall_workflow_after_a_crash_terminates_the_unrecorded_instance(deploy, ec2, monkeypatch):
    deployment = deploy({"server": instance_node()})
    create_dies_right_after_run_instances(deployment, monkeypatch)
    (leaked,) = live_instances(ec2)
    deployment.uninstall()
    assert live_instances(ec2) == []
    assert describe(ec2, leaked["InstanceId"])["State"]["Name"] == "terminated"
    assert deployment.runtime("server") == {}


def test_uninstall_after_an_install_that_failed_on_a_bad_image_succeeds(deploy, ec2, calls, capsys):
    deployment = deploy({"server": instance_node(image_id="ami-0000000000000dead")})
    with pytest.raises(WorkflowFailed):
        deployment.install()
    assert "Task failed 'ec2.instance.creation_validation' -> node 'server': property 'image_id'" in (
        capsys.readouterr().out
    )
    deployment.uninstall()
    assert "RunInstances" not in calls.operations
    assert live_instances(ec2) == []
    assert deployment.runtime("server") == {}


def test_check_status_passes_while_the_instance_runs(deploy, calls, capsys):
    deployment = deploy({"server": instance_node()})
    deployment.install()
    capsys.readouterr()
    del calls.operations[:]
    deployment.execute("check_status")
    assert f"Instance {deployment.runtime('server')['aws_resource_id']} is running." in capsys.readouterr().out
    assert calls.operations == ["DescribeInstances"]


def test_check_status_fails_when_the_instance_was_terminated(deploy, ec2, capsys):
    deployment = deploy({"server": instance_node()})
    deployment.install()
    instance_id = deployment.runtime("server")["aws_resource_id"]
    ec2.terminate_instances(InstanceIds=[instance_id])
    capsys.readouterr()
    with pytest.raises(WorkflowFailed):
        deployment.execute("check_status")
    out = capsys.readouterr().out
    assert f"Task failed 'ec2.instance.check_status' -> node 'server': instance {instance_id} is terminated" in out
    assert "Fix: run the heal workflow" in out


def test_heal_replaces_an_instance_terminated_behind_cloudifys_back(deploy, ec2):
    deployment = deploy({"server": instance_node()})
    deployment.install()
    old_id = deployment.runtime("server")["aws_resource_id"]
    ec2.terminate_instances(InstanceIds=[old_id])
    (node_instance,) = deployment.instances("server")

    deployment.execute("heal", node_instance_id=node_instance.id)

    (instance,) = live_instances(ec2)
    assert instance["InstanceId"] != old_id
    assert instance["State"]["Name"] == "running"
    runtime = deployment.runtime("server")
    assert runtime["aws_resource_id"] == instance["InstanceId"]
    assert runtime["ip"] == instance["PrivateIpAddress"]


# --- parameters and user data ---------------------------------------------------


def user_data_of(ec2, instance_id: str) -> str:
    found = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(found["UserData"]["Value"]).decode()


def test_boto2_parameters_reach_ec2_as_intended(deploy, ec2):
    subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]
    parameters = {
        "placement": subnet["AvailabilityZone"],
        "subnet_id": subnet["SubnetId"],
        "user_data": "#!/bin/sh\necho hello\n",
        "instance_initiated_shutdown_behavior": "terminate",
    }
    deployment = deploy({"server": instance_node(parameters=parameters)})
    deployment.install()
    instance_id = deployment.runtime("server")["aws_resource_id"]
    instance = describe(ec2, instance_id)
    assert instance["Placement"]["AvailabilityZone"] == subnet["AvailabilityZone"]
    assert instance["SubnetId"] == subnet["SubnetId"]
    assert user_data_of(ec2, instance_id) == "#!/bin/sh\necho hello\n"
    behaviour = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"


def test_boto3_parameters_are_passed_through(deploy, ec2):
    parameters = {"MetadataOptions": {"HttpTokens": "required"}, "Monitoring": {"Enabled": True}}
    deployment = deploy({"server": instance_node(parameters=parameters)})
    deployment.install()
    instance = describe(ec2, deployment.runtime("server")["aws_resource_id"])
    assert instance["Monitoring"]["State"] == "enabled"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"


def test_the_agent_init_script_ends_up_in_user_data_with_the_users_own(deploy, ec2, monkeypatch):
    monkeypatch.setattr(
        cloudify_context.CloudifyAgentContext, "init_script", lambda self, agent_config=None: "#!/bin/sh\nagent\n"
    )
    node = instance_node(parameters={"user_data": "#cloud-config\npackages: [nginx]\n"})
    node["properties"]["agent_config"] = {"install_method": "init_script"}
    deployment = deploy({"server": node})
    deployment.execute_operation("cloudify.interfaces.lifecycle.create", ["server"])

    message = email.message_from_string(user_data_of(ec2, deployment.runtime("server")["aws_resource_id"]))
    assert message.is_multipart()
    parts = {part.get_content_type(): part.get_payload(decode=True).decode() for part in message.get_payload()}
    assert parts == {
        "text/cloud-config": "#cloud-config\npackages: [nginx]\n",
        "text/x-shellscript": "#!/bin/sh\nagent\n",
    }


# --- documentation --------------------------------------------------------------


def reference_instance_example() -> dict:
    text = (Path(__file__).resolve().parent.parent / "docs" / "reference.md").read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```yaml\n")[1:]]
    (block,) = [block for block in blocks if block.startswith("# Instance example")]
    return yaml.safe_load(block)["node_templates"]


def test_the_reference_example_installs_and_uninstalls(deploy, ec2, tmp_path):
    nodes = reference_instance_example()
    nodes["key"]["properties"]["private_key_path"] = str(tmp_path / "web-key.pem")
    deployment = deploy(nodes)
    deployment.install()
    instance = describe(ec2, deployment.runtime("web")["aws_resource_id"])
    assert instance["Placement"]["AvailabilityZone"] == "us-east-1a"
    assert instance["KeyName"] == "web-key"
    deployment.uninstall()
    assert live_instances(ec2) == []
