"""ElasticIP blueprints installed and uninstalled through cloudify.workflows.local
against the moto server: a full KeyPair + SecurityGroup + Instance + ElasticIP
topology, and the external-resource variants of the relationship."""

from __future__ import annotations

import pytest
import yaml
from cloudify.exceptions import WorkflowFailed

from tests.support import (
    IMAGE_ID,
    ROOT,
    die_once_after,
    instance_node,
    live_instances,
    refuse_release_while_associated,
)

ELASTIC_IP_RELATIONSHIP = "cloudify.aws.relationships.instance_connected_to_elastic_ip"


def addresses(ec2) -> list[dict]:
    return ec2.describe_addresses()["Addresses"]


def live_instance_ids(ec2) -> list[str]:
    return [instance["InstanceId"] for instance in live_instances(ec2)]


def full_topology_of(deploy):
    """KeyPair + SecurityGroup + Instance + ElasticIP, installed (``deploy`` or ``deploy_once``)."""
    nodes = {
        "key": {
            "type": "cloudify.aws.nodes.KeyPair",
            "properties": {"private_key_path": str(deploy.folder / "keys" / "eip-key.pem")},
        },
        "group": {
            "type": "cloudify.aws.nodes.SecurityGroup",
            "properties": {
                "description": "ssh",
                "rules": [{"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ip": "0.0.0.0/0"}],
            },
        },
        "server": instance_node(
            ("cloudify.aws.relationships.instance_connected_to_keypair", "key"),
            ("cloudify.aws.relationships.instance_connected_to_security_group", "group"),
            (ELASTIC_IP_RELATIONSHIP, "address"),
        ),
        "address": {"type": "cloudify.aws.nodes.ElasticIP", "properties": {"tags": {"team": "qa"}}},
    }
    deployment = deploy(nodes, outputs={"public_ip": {"value": {"get_attribute": ["address", "aws_resource_id"]}}})
    deployment.install()
    return deployment


# --- full topology ---------------------------------------------------------------


@pytest.mark.shared_deployment
class TestTheInstalledFullTopology:
    """Read-only checks of one installed full topology."""

    @pytest.fixture(scope="class")
    def full_topology(self, deploy_once):
        return full_topology_of(deploy_once)

    def test_install_associates_the_address_with_the_instance(self, full_topology, ec2):
        (address,) = addresses(ec2)
        assert address["InstanceId"] == full_topology.runtime("server")["aws_resource_id"]
        assert full_topology.runtime("address")["association_id"] == address["AssociationId"]

    def test_the_actual_ip_is_available_via_the_aws_resource_id_runtime_property(self, full_topology, ec2):
        (address,) = addresses(ec2)
        assert full_topology.runtime("address")["aws_resource_id"] == address["PublicIp"]
        assert full_topology.env.outputs() == {"public_ip": address["PublicIp"]}

    def test_the_instances_public_ip_address_is_the_elastic_ip(self, full_topology, ec2):
        (address,) = addresses(ec2)
        instance_id = full_topology.runtime("server")["aws_resource_id"]
        (described,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"]
        assert full_topology.runtime("server")["public_ip_address"] == address["PublicIp"]
        assert described["PublicIpAddress"] == address["PublicIp"]


@pytest.fixture
def full_topology(deploy):
    """The full topology, installed for a test that changes it."""
    return full_topology_of(deploy)


def test_uninstall_disassociates_and_releases_the_address_and_terminates_the_instance(full_topology, ec2, calls):
    full_topology.uninstall()
    assert addresses(ec2) == []
    assert live_instance_ids(ec2) == []
    assert "DisassociateAddress" in calls.operations
    assert calls.operations.index("DisassociateAddress") < calls.operations.index("ReleaseAddress")
    assert "aws_resource_id" not in full_topology.runtime("address")
    assert "allocation_id" not in full_topology.runtime("address")


# --- external resources -------------------------------------------------------


@pytest.fixture
def external_pair(ec2):
    """An instance with an address associated to it, both made outside Cloudify."""
    (instance,) = ec2.run_instances(ImageId=IMAGE_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"]
    address = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=instance["InstanceId"])
    return instance["InstanceId"], address


def deploy_both_external(deploy, instance_id: str, address_id: str):
    """An external instance connected to an external address (given by IP or allocation id)."""
    return deploy(
        {
            "server": instance_node(
                (ELASTIC_IP_RELATIONSHIP, "address"), use_external_resource=True, resource_id=instance_id
            ),
            "address": {
                "type": "cloudify.aws.nodes.ElasticIP",
                "properties": {"use_external_resource": True, "resource_id": address_id},
            },
        }
    )


def test_external_address_with_external_instance_makes_no_association_call(deploy, external_pair, ec2, calls):
    instance_id, address = external_pair
    deployment = deploy_both_external(deploy, instance_id, address["PublicIp"])
    deployment.install()
    deployment.uninstall()
    for operation in ("AllocateAddress", "AssociateAddress", "DisassociateAddress", "ReleaseAddress"):
        assert operation not in calls.operations
    (left,) = addresses(ec2)
    assert left["InstanceId"] == instance_id
    assert left["AllocationId"] == address["AllocationId"]


def test_external_address_with_external_instance_sets_the_runtime_properties(deploy, external_pair):
    instance_id, address = external_pair
    deployment = deploy_both_external(deploy, instance_id, address["AllocationId"])
    deployment.install()
    assert deployment.runtime("address")["aws_resource_id"] == address["PublicIp"]
    assert deployment.runtime("address")["associated_instance_id"] == instance_id
    assert deployment.runtime("server")["public_ip_address"] == address["PublicIp"]


@pytest.fixture
def external_address_with_new_instance(deploy, ec2):
    address = ec2.allocate_address(Domain="vpc")
    deployment = deploy(
        {
            "server": instance_node((ELASTIC_IP_RELATIONSHIP, "address")),
            "address": {
                "type": "cloudify.aws.nodes.ElasticIP",
                "properties": {"use_external_resource": True, "resource_id": address["PublicIp"]},
            },
        }
    )
    deployment.install()
    return deployment, address


def test_external_address_with_a_new_instance_is_associated_on_install(external_address_with_new_instance, ec2):
    deployment, address = external_address_with_new_instance
    (associated,) = addresses(ec2)
    assert associated["InstanceId"] == deployment.runtime("server")["aws_resource_id"]
    assert deployment.runtime("server")["public_ip_address"] == address["PublicIp"]


def test_external_address_with_a_new_instance_is_disassociated_but_not_released_on_uninstall(
    external_address_with_new_instance, ec2
):
    deployment, address = external_address_with_new_instance
    deployment.uninstall()
    (left,) = addresses(ec2)
    assert left["AllocationId"] == address["AllocationId"]
    assert not left.get("InstanceId")
    assert live_instance_ids(ec2) == []


# --- idempotence and ownership ------------------------------------------------------


def test_a_rerun_of_install_after_a_crash_after_allocate_address_leaves_exactly_one_address(deploy, ec2, monkeypatch):
    deployment = deploy({"address": {"type": "cloudify.aws.nodes.ElasticIP"}})
    crashed = die_once_after(monkeypatch, "AllocateAddress")
    with pytest.raises(WorkflowFailed):
        deployment.install()
    (leaked,) = addresses(ec2)
    assert crashed
    assert "aws_resource_id" not in deployment.runtime("address")

    deployment.install()
    (address,) = addresses(ec2)
    assert address["AllocationId"] == leaked["AllocationId"]
    assert deployment.runtime("address")["aws_resource_id"] == leaked["PublicIp"]


def test_unlink_leaves_alone_an_address_meanwhile_moved_to_another_instance(deploy, ec2, monkeypatch):
    refuse_release_while_associated(monkeypatch)
    deployment = deploy(
        {
            "server": instance_node((ELASTIC_IP_RELATIONSHIP, "address")),
            # Past propagation_timeout (here 0) of asking again in-process, release is retried by the workflow.
            "address": {
                "type": "cloudify.aws.nodes.ElasticIP",
                "properties": {"wait_timeout": 0, "aws_config": {"propagation_timeout": 0}},
            },
        }
    )
    deployment.install()
    (other,) = ec2.run_instances(ImageId=IMAGE_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"]
    allocation_id = deployment.runtime("address")["allocation_id"]
    moved = ec2.associate_address(AllocationId=allocation_id, InstanceId=other["InstanceId"], AllowReassociation=True)

    # unlink leaves the address alone; release is then refused (InvalidIPAddress.InUse)
    # and retried, which with task_retries=0 ends the uninstall as failed.
    with pytest.raises(WorkflowFailed):
        deployment.uninstall()

    assert live_instance_ids(ec2) == [other["InstanceId"]]  # unlink ran: the server is already terminated
    (address,) = addresses(ec2)
    assert address["InstanceId"] == other["InstanceId"]
    assert address["AssociationId"] == moved["AssociationId"]
    assert deployment.runtime("address")["allocation_id"] == allocation_id


def test_the_reference_example_installs_and_uninstalls(deploy, ec2):
    reference = (ROOT / "docs" / "reference.md").read_text()
    blocks = [block.split("```", 1)[0] for block in reference.split("```yaml\n")[1:]]
    (example_text,) = [block for block in blocks if block.startswith("# ElasticIP example")]
    example = yaml.safe_load(example_text)
    deployment = deploy(example["node_templates"], outputs=example["outputs"])
    deployment.install()
    (address,) = addresses(ec2)
    assert deployment.env.outputs() == {"public_ip": address["PublicIp"]}
    assert address["InstanceId"] == deployment.runtime("server")["aws_resource_id"]
    deployment.uninstall()
    assert addresses(ec2) == []
