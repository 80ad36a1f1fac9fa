"""State written by the classic plugin is read correctly.

Each test builds a node instance holding only the runtime properties the
classic reference page lists (aws_resource_id for every type; reservation_id,
ip, private_dns_name, public_dns_name and public_ip_address for an Instance;
an elastic IP's public IP, a key pair's name, a group's id), with none of the
markers this plugin adds (create_started, allocation_id, private_key_file,
...), then runs this plugin's lifecycle operations on it against the moto server.
"""

from __future__ import annotations

import os

import pytest
from cloudify.mocks import MockCloudifyContext, MockNodeContext, MockNodeInstanceContext
from cloudify.mocks import MockRelationshipSubjectContext as Subject
from cloudify.state import current_ctx

from ec2 import constants, elasticip, instance, keypair, securitygroup
from tests.support import IMAGE_ID, LocalDeployment, live_instances, write_blueprint

COMMON = {"use_external_resource": False, "resource_id": "", "aws_config": {}, "tags": {}}
SERVER = {
    **COMMON,
    "image_id": IMAGE_ID,
    "instance_type": "m3.medium",
    "parameters": {},
    "agent_config": {"install_method": "none"},
    "wait_timeout": 30,
    "wait_interval": 0,
}
ADDRESS_PROPERTIES = ("ip", "private_dns_name", "public_dns_name", "public_ip_address")
# What this plugin records beyond the classic plugin's properties; none of it is in classic-era state.
PLUGIN_MARKERS = (
    constants.CREATE_STARTED,
    constants.CREATE_RESENT,
    constants.EXTERNAL_RESOURCE,
    constants.ALLOCATION_ID,
    constants.ASSOCIATION_ID,
    constants.ASSOCIATED_INSTANCE_ID,
    constants.KEY_FILE_WRITTEN,
    constants.KEY_FOLDERS_CREATED,
)


@pytest.fixture
def node(make_ctx):
    """A node instance's context holding exactly the given runtime properties."""

    def build(node_id: str, properties: dict, runtime: dict, **kwargs):
        assert not set(runtime) & set(PLUGIN_MARKERS)
        return make_ctx(
            {**COMMON, **properties},
            node_id=node_id,
            instance_id=f"{node_id}_classic",
            runtime_properties=dict(runtime),
            **kwargs,
        )

    return build


@pytest.fixture
def relationship():
    """An instance_connected_to_elastic_ip context: source instance, target address."""

    def build(server_runtime: dict, address_runtime: dict, address_properties: dict | None = None):
        ctx = MockCloudifyContext(
            deployment_id="dep",
            source=Subject(
                MockNodeContext("server", dict(SERVER)), MockNodeInstanceContext("server_1", server_runtime)
            ),
            target=Subject(
                MockNodeContext("ip", {**COMMON, **(address_properties or {})}),
                MockNodeInstanceContext("ip_1", address_runtime),
            ),
        )
        current_ctx.set(ctx)
        return ctx

    yield build
    current_ctx.clear()


def described(ec2, instance_id: str) -> dict:
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservation["Instances"][0]


def state(ec2, instance_id: str) -> str:
    return described(ec2, instance_id)["State"]["Name"]


def launched_classically(ec2) -> dict:
    """An instance launched outside this plugin, and what the classic plugin recorded for it after start."""
    response = ec2.run_instances(ImageId=IMAGE_ID, InstanceType="m3.medium", MinCount=1, MaxCount=1)
    instance_id = response["Instances"][0]["InstanceId"]
    running = described(ec2, instance_id)
    return {
        "aws_resource_id": instance_id,
        "reservation_id": response["ReservationId"],
        "ip": running["PrivateIpAddress"],
        "private_dns_name": running["PrivateDnsName"],
        "public_dns_name": running["PublicDnsName"],
        "public_ip_address": running["PublicIpAddress"],
    }


def group_names(ec2) -> list[str]:
    return sorted(group["GroupName"] for group in ec2.describe_security_groups()["SecurityGroups"])


# --- Instance ---------------------------------------------------------------------


def test_stop_stops_a_classic_era_instance_and_forgets_its_addresses(node, ec2):
    runtime = launched_classically(ec2)
    ctx = node("server", SERVER, runtime)
    instance.stop(ctx=ctx)
    assert state(ec2, runtime["aws_resource_id"]) == "stopped"
    assert ctx.instance.runtime_properties == {
        "aws_resource_id": runtime["aws_resource_id"],
        "reservation_id": runtime["reservation_id"],
    }


def test_start_starts_a_stopped_classic_era_instance_and_records_its_addresses(node, ec2):
    runtime = launched_classically(ec2)
    instance_id = runtime["aws_resource_id"]
    ec2.stop_instances(InstanceIds=[instance_id])
    assert state(ec2, instance_id) == "stopped"
    ctx = node("server", SERVER, {"aws_resource_id": instance_id, "reservation_id": runtime["reservation_id"]})
    instance.start(ctx=ctx)
    running = described(ec2, instance_id)
    assert running["State"]["Name"] == "running"
    assert ctx.instance.runtime_properties["ip"] == running["PrivateIpAddress"]
    assert ctx.instance.runtime_properties["private_dns_name"] == running["PrivateDnsName"]
    assert ctx.instance.runtime_properties["public_dns_name"] == running["PublicDnsName"]
    assert ctx.instance.runtime_properties["public_ip_address"] == running["PublicIpAddress"]


def test_delete_terminates_a_classic_era_instance_and_forgets_every_runtime_property(node, ec2):
    runtime = launched_classically(ec2)
    ctx = node("server", SERVER, runtime)
    instance.terminate(ctx=ctx)
    assert state(ec2, runtime["aws_resource_id"]) == "terminated"
    assert ctx.instance.runtime_properties == {}


def test_create_run_again_keeps_the_classic_era_instance_and_launches_none(node, ec2, calls):
    runtime = launched_classically(ec2)
    ctx = node("server", SERVER, runtime)
    instance.run_instances(ctx=ctx)
    assert calls.mutating == []
    assert [one["InstanceId"] for one in live_instances(ec2)] == [runtime["aws_resource_id"]]
    assert ctx.instance.runtime_properties == runtime


def test_check_status_passes_for_a_running_classic_era_instance(node, ec2):
    instance.check_status(ctx=node("server", SERVER, launched_classically(ec2)))


def test_an_external_classic_era_instance_is_stopped_and_deleted_only_in_runtime_properties(node, ec2, calls):
    runtime = launched_classically(ec2)
    external = {**SERVER, "use_external_resource": True, "resource_id": runtime["aws_resource_id"]}
    ctx = node("server", external, runtime)
    instance.stop(ctx=ctx)
    assert set(ctx.instance.runtime_properties) == {"aws_resource_id", "reservation_id"}
    instance.terminate(ctx=ctx)
    assert ctx.instance.runtime_properties == {}
    assert calls.mutating == []
    assert state(ec2, runtime["aws_resource_id"]) == "running"


# --- KeyPair ------------------------------------------------------------------------


def classic_key(ec2, folder) -> str:
    """A key pair made outside this plugin, with its private key written where the classic plugin wrote it."""
    path = folder / "classic-key.pem"
    material = ec2.create_key_pair(KeyName="classic-key")["KeyMaterial"]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(material)
    return str(path)


def key_names(ec2) -> list[str]:
    return [key["KeyName"] for key in ec2.describe_key_pairs()["KeyPairs"]]


def test_delete_deletes_a_classic_era_key_pair_and_the_key_file_the_classic_plugin_wrote(node, ec2, tmp_path):
    path = classic_key(ec2, tmp_path)
    ctx = node("key", {"resource_id": "classic-key", "private_key_path": path}, {"aws_resource_id": "classic-key"})
    keypair.delete(ctx=ctx)
    assert key_names(ec2) == []
    assert not os.path.lexists(path)
    assert ctx.instance.runtime_properties == {}


def test_delete_of_a_classic_era_key_pair_without_its_key_file_deletes_the_key_pair(node, ec2, tmp_path):
    path = classic_key(ec2, tmp_path)
    os.remove(path)
    ctx = node("key", {"resource_id": "classic-key", "private_key_path": path}, {"aws_resource_id": "classic-key"})
    keypair.delete(ctx=ctx)
    assert key_names(ec2) == []


def test_delete_of_an_external_classic_era_key_pair_leaves_the_key_and_its_file(node, ec2, tmp_path):
    path = classic_key(ec2, tmp_path)
    properties = {"use_external_resource": True, "resource_id": "classic-key", "private_key_path": path}
    ctx = node("key", properties, {"aws_resource_id": "classic-key"})
    keypair.delete(ctx=ctx)
    assert key_names(ec2) == ["classic-key"]
    assert os.path.isfile(path)
    assert ctx.instance.runtime_properties == {}


# --- SecurityGroup -------------------------------------------------------------------


def classic_group(ec2) -> str:
    group_id = ec2.create_security_group(GroupName="classic-group", Description="classic")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    return group_id


def test_delete_deletes_a_classic_era_security_group_known_by_its_id(node, ec2):
    group_id = classic_group(ec2)
    ctx = node("group", {"resource_id": "classic-group", "description": "classic"}, {"aws_resource_id": group_id})
    securitygroup.delete(ctx=ctx)
    assert group_names(ec2) == ["default"]
    assert ctx.instance.runtime_properties == {}


def test_delete_of_an_external_classic_era_security_group_leaves_it(node, ec2, calls):
    group_id = classic_group(ec2)
    properties = {"use_external_resource": True, "resource_id": group_id}
    ctx = node("group", properties, {"aws_resource_id": group_id})
    securitygroup.delete(ctx=ctx)
    assert calls.mutating == []
    assert group_names(ec2) == ["classic-group", "default"]
    assert ctx.instance.runtime_properties == {}


# --- ElasticIP ------------------------------------------------------------------------


@pytest.fixture
def installed_address(node, relationship, ec2):
    """An address allocated and associated by this plugin, then stripped down to
    what the classic plugin recorded: (server runtime, address runtime)."""
    server = launched_classically(ec2)
    ctx = node("ip", {}, {})
    elasticip.allocate(ctx=ctx)
    current_ctx.clear()
    elasticip.associate(ctx=relationship(server, dict(ctx.instance.runtime_properties)))
    public_ip = ctx.instance.runtime_properties["aws_resource_id"]
    (address,) = ec2.describe_addresses()["Addresses"]
    assert address["InstanceId"] == server["aws_resource_id"]
    return {**server, "public_ip_address": public_ip}, {"aws_resource_id": public_ip}


def test_an_elastic_ip_known_by_its_public_ip_only_is_disassociated_and_released(
    installed_address, relationship, node, ec2
):
    server, address = installed_address
    link = relationship(server, dict(address))
    elasticip.disassociate(ctx=link)
    (left,) = ec2.describe_addresses()["Addresses"]
    assert not left.get("AssociationId")
    assert "public_ip_address" not in link.source.instance.runtime_properties
    current_ctx.clear()
    ctx = node("ip", {}, dict(link.target.instance.runtime_properties))
    elasticip.release(ctx=ctx)
    assert ec2.describe_addresses()["Addresses"] == []
    assert ctx.instance.runtime_properties == {}


def test_an_elastic_ip_known_by_its_public_ip_only_is_associated(relationship, ec2):
    server = launched_classically(ec2)
    allocated = ec2.allocate_address(Domain="vpc")
    link = relationship(server, {"aws_resource_id": allocated["PublicIp"]})
    elasticip.associate(ctx=link)
    (address,) = ec2.describe_addresses()["Addresses"]
    assert address["InstanceId"] == server["aws_resource_id"]
    assert link.target.instance.runtime_properties["allocation_id"] == allocated["AllocationId"]
    assert link.source.instance.runtime_properties["public_ip_address"] == allocated["PublicIp"]


def test_an_unassociated_elastic_ip_known_by_its_public_ip_only_is_released(node, ec2):
    allocated = ec2.allocate_address(Domain="vpc")
    ctx = node("ip", {}, {"aws_resource_id": allocated["PublicIp"]})
    elasticip.release(ctx=ctx)
    assert ec2.describe_addresses()["Addresses"] == []


def test_an_external_elastic_ip_known_by_its_public_ip_only_is_left_allocated(node, ec2, calls):
    allocated = ec2.allocate_address(Domain="vpc")
    properties = {"use_external_resource": True, "resource_id": allocated["PublicIp"]}
    ctx = node("ip", properties, {"aws_resource_id": allocated["PublicIp"]})
    elasticip.release(ctx=ctx)
    assert calls.mutating == []
    assert [address["PublicIp"] for address in ec2.describe_addresses()["Addresses"]] == [allocated["PublicIp"]]
    assert ctx.instance.runtime_properties == {}


# --- a whole classic-era deployment ------------------------------------------------------

TOPOLOGY = f"""
key:
  type: cloudify.aws.nodes.KeyPair
  properties:
    resource_id: state-key
    private_key_path: KEY_PATH
group:
  type: cloudify.aws.nodes.SecurityGroup
  properties:
    resource_id: state-group
    description: classic-era state
    rules:
      - {{ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ip: 0.0.0.0/0}}
address:
  type: cloudify.aws.nodes.ElasticIP
server:
  type: cloudify.aws.nodes.Instance
  properties:
    image_id: {IMAGE_ID}
    instance_type: m3.medium
    agent_config: {{install_method: none}}
    wait_interval: 0
  relationships:
    - {{type: cloudify.aws.relationships.instance_connected_to_keypair, target: key}}
    - {{type: cloudify.aws.relationships.instance_connected_to_security_group, target: group}}
    - {{type: cloudify.aws.relationships.instance_connected_to_elastic_ip, target: address}}
"""
CLASSIC_PROPERTIES = {
    "key": ("aws_resource_id",),
    "group": ("aws_resource_id",),
    "address": ("aws_resource_id",),
    "server": ("aws_resource_id", "reservation_id", *ADDRESS_PROPERTIES),
}


def keep_only_classic_state(deployment: LocalDeployment) -> None:
    """Rewrites every stored node instance to what the classic plugin would have recorded."""
    storage = deployment.env.storage
    for stored in storage.get_node_instances():
        kept = {name: stored.runtime_properties[name] for name in CLASSIC_PROPERTIES[stored.node_id]}
        assert all(kept.values())
        storage.update_node_instance(stored.id, version=stored.version, runtime_properties=kept, force=True)


def test_a_deployment_with_only_classic_era_state_uninstalls_and_leaves_nothing(tmp_path, ec2):
    key_path = tmp_path / "state-key.pem"
    blueprint = write_blueprint(tmp_path, TOPOLOGY.replace("KEY_PATH", str(key_path)))
    deployment = LocalDeployment(blueprint)
    deployment.install()
    keep_only_classic_state(deployment)
    assert deployment.runtime("address") == {"aws_resource_id": ec2.describe_addresses()["Addresses"][0]["PublicIp"]}
    deployment.uninstall()
    assert live_instances(ec2) == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert key_names(ec2) == []
    assert group_names(ec2) == ["default"]
    assert not key_path.exists()
