"""cloudify.aws.nodes.ElasticIP operations and the instance_connected_to_elastic_ip
relationship, run with mock contexts against the moto server."""

from __future__ import annotations

import pytest
from cloudify.exceptions import NonRecoverableError, RecoverableError
from cloudify.mocks import (
    MockCloudifyContext,
    MockNodeContext,
    MockNodeInstanceContext,
    MockRelationshipSubjectContext,
)
from cloudify.state import current_ctx

from ec2 import connection, elasticip
from tests.support import (
    IMAGE_ID,
    die_once_after,
    interrupted_create,
    made_long_ago,
    refuse_release_while_associated,
)

DEFAULTS = {"use_external_resource": False, "resource_id": "", "aws_config": {}, "tags": {}}


# --- fixtures ---------------------------------------------------------------


@pytest.fixture
def new_instance(ec2):
    """Launches an instance directly with boto3 and returns its id."""

    def launch() -> str:
        (instance,) = ec2.run_instances(ImageId=IMAGE_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"]
        ec2.describe_instances(InstanceIds=[instance["InstanceId"]])  # moto settles to running on describe
        return instance["InstanceId"]

    return launch


@pytest.fixture
def address_ctx(make_ctx):
    """A node context for an ElasticIP node instance."""

    def build(instance_id: str = "ip_abc123", **properties):
        return make_ctx(properties, node_id="ip", instance_id=instance_id, operation={"name": "op", "retry_number": 0})

    return build


@pytest.fixture
def allocated(address_ctx):
    """An address allocated by the plugin; returns its node context."""
    ctx = address_ctx()
    elasticip.allocate(ctx=ctx)
    current_ctx.clear()
    return ctx


@pytest.fixture
def relationship_ctx():
    """A relationship context: source is the instance, target is the address."""

    def build(instance_id: str, address_runtime: dict, instance_external=False, address_external=False):
        source = MockRelationshipSubjectContext(
            node=MockNodeContext("server", {**DEFAULTS, "use_external_resource": instance_external}),
            instance=MockNodeInstanceContext("server_1", {"aws_resource_id": instance_id}),
        )
        target = MockRelationshipSubjectContext(
            node=MockNodeContext("ip", {**DEFAULTS, "use_external_resource": address_external}),
            instance=MockNodeInstanceContext("ip_1", dict(address_runtime)),
        )
        ctx = MockCloudifyContext(deployment_id="dep", source=source, target=target)
        current_ctx.set(ctx)
        return ctx

    yield build
    current_ctx.clear()


def addresses(ec2) -> list[dict]:
    return ec2.describe_addresses()["Addresses"]


def tags_of(address: dict) -> dict:
    return {tag["Key"]: tag["Value"] for tag in address.get("Tags", [])}


# --- allocate ---------------------------------------------------------------


def test_the_actual_ip_is_available_via_the_aws_resource_id_runtime_property(address_ctx, ec2):
    ctx = address_ctx()
    elasticip.allocate(ctx=ctx)
    (address,) = addresses(ec2)
    assert ctx.instance.runtime_properties["aws_resource_id"] == address["PublicIp"]


def test_allocate_records_the_allocation_id(address_ctx, ec2):
    ctx = address_ctx()
    elasticip.allocate(ctx=ctx)
    (address,) = addresses(ec2)
    assert ctx.instance.runtime_properties["allocation_id"] == address["AllocationId"]
    assert address["Domain"] == "vpc"


def test_allocate_applies_tags_inline_with_ownership_tags(address_ctx, ec2, calls):
    ctx = address_ctx(tags={"team": "qa"})
    elasticip.allocate(ctx=ctx)
    (address,) = addresses(ec2)
    assert tags_of(address) == {
        "team": "qa",
        "cloudify:deployment-id": "dep",
        "cloudify:node-instance-id": "ip_abc123",
    }
    assert calls.mutating == ["AllocateAddress"]


def allocate_dies_right_after_allocate_address(ctx, monkeypatch) -> None:
    """Runs allocate in a process that "dies" before recording the address."""
    died = die_once_after(monkeypatch, "AllocateAddress")
    with pytest.raises(SystemExit):
        elasticip.allocate(ctx=ctx)
    assert died


def test_a_rerun_after_a_crash_after_allocate_address_adopts_the_same_address(address_ctx, ec2, monkeypatch):
    ctx = address_ctx()
    allocate_dies_right_after_allocate_address(ctx, monkeypatch)
    assert "aws_resource_id" not in ctx.instance.runtime_properties
    (leaked,) = addresses(ec2)

    rerun = address_ctx()
    interrupted_create(rerun)  # what the crashed run had saved
    elasticip.allocate(ctx=rerun)
    assert [a["AllocationId"] for a in addresses(ec2)] == [leaked["AllocationId"]]
    assert rerun.instance.runtime_properties["aws_resource_id"] == leaked["PublicIp"]
    assert rerun.instance.runtime_properties["allocation_id"] == leaked["AllocationId"]


def test_release_after_a_crash_after_allocate_address_releases_the_unrecorded_address(address_ctx, ec2, monkeypatch):
    ctx = address_ctx()
    allocate_dies_right_after_allocate_address(ctx, monkeypatch)
    rerun = address_ctx()
    interrupted_create(rerun)  # what the crashed run had saved
    elasticip.release(ctx=rerun)
    assert addresses(ec2) == []


def test_allocate_does_not_adopt_an_address_of_another_node_instance(address_ctx, ec2):
    elasticip.allocate(ctx=address_ctx("ip_first"))
    elasticip.allocate(ctx=address_ctx("ip_second"))
    assert len(addresses(ec2)) == 2


def test_a_resource_id_that_is_neither_an_ip_nor_an_allocation_id_is_refused_before_aws_is_called(address_ctx, calls):
    ctx = address_ctx(resource_id="my-address")
    with pytest.raises(NonRecoverableError) as error:
        elasticip.allocate(ctx=ctx)
    assert "node 'ip'" in str(error.value)
    assert "'resource_id'" in str(error.value)
    assert "Fix:" in str(error.value)
    assert calls.operations == []


def test_invalid_tags_are_refused_before_any_address_is_allocated(address_ctx, ec2):
    with pytest.raises(NonRecoverableError, match="'tags'"):
        elasticip.allocate(ctx=address_ctx(tags=["not", "a", "dict"]))
    assert addresses(ec2) == []


# --- external address -------------------------------------------------------


def test_an_external_address_given_by_public_ip_is_used_not_allocated(address_ctx, ec2, calls):
    existing = ec2.allocate_address(Domain="vpc")
    ctx = address_ctx(use_external_resource=True, resource_id=existing["PublicIp"])
    elasticip.allocate(ctx=ctx)
    assert ctx.instance.runtime_properties["aws_resource_id"] == existing["PublicIp"]
    assert ctx.instance.runtime_properties["allocation_id"] == existing["AllocationId"]
    assert ctx.instance.runtime_properties["external_resource"] is True
    assert calls.mutating == []


def test_an_external_address_given_by_allocation_id_records_its_public_ip(address_ctx, ec2):
    existing = ec2.allocate_address(Domain="vpc")
    ctx = address_ctx(use_external_resource=True, resource_id=existing["AllocationId"])
    elasticip.allocate(ctx=ctx)
    assert ctx.instance.runtime_properties["aws_resource_id"] == existing["PublicIp"]
    assert ctx.instance.runtime_properties["allocation_id"] == existing["AllocationId"]


def test_a_missing_external_address_fails_the_create_naming_node_property_and_fix(address_ctx, ec2):
    ctx = address_ctx(use_external_resource=True, resource_id="eipalloc-0123abcd")
    with pytest.raises(NonRecoverableError) as error:
        elasticip.allocate(ctx=ctx)
    message = str(error.value)
    assert "node 'ip'" in message and "'resource_id'" in message and "eipalloc-0123abcd" in message
    assert "Fix:" in message
    assert addresses(ec2) == []


def test_an_external_address_is_never_released(address_ctx, ec2, calls):
    existing = ec2.allocate_address(Domain="vpc")
    ctx = address_ctx(use_external_resource=True, resource_id=existing["PublicIp"])
    elasticip.allocate(ctx=ctx)
    elasticip.release(ctx=ctx)
    assert [a["AllocationId"] for a in addresses(ec2)] == [existing["AllocationId"]]
    assert "aws_resource_id" not in ctx.instance.runtime_properties
    assert "allocation_id" not in ctx.instance.runtime_properties
    assert calls.mutating == []


def test_delete_of_an_external_address_that_no_longer_exists_fails(address_ctx, ec2):
    existing = ec2.allocate_address(Domain="vpc")
    ctx = address_ctx(use_external_resource=True, resource_id=existing["PublicIp"])
    elasticip.allocate(ctx=ctx)
    ec2.release_address(AllocationId=existing["AllocationId"])
    with pytest.raises(NonRecoverableError, match="does not exist"):
        elasticip.release(ctx=ctx)


# --- release ----------------------------------------------------------------


def test_release_deletes_the_address_and_pops_its_runtime_properties(allocated, ec2):
    elasticip.release(ctx=allocated)
    assert addresses(ec2) == []
    assert allocated.instance.runtime_properties == {}


def test_release_of_an_address_already_released_counts_as_done(allocated, ec2):
    made_long_ago(allocated.instance.runtime_properties)  # within its propagation window, release would wait
    ec2.release_address(AllocationId=allocated.instance.runtime_properties["allocation_id"])
    elasticip.release(ctx=allocated)
    assert allocated.instance.runtime_properties == {}


def test_release_of_an_address_still_in_use_is_retried_not_failed(address_ctx, new_instance, ec2, monkeypatch):
    refuse_release_while_associated(monkeypatch)
    # Past propagation_timeout (here 0) of asking again in-process, the workflow retries.
    ctx = address_ctx(wait_timeout=0, retry_after=7, aws_config={"propagation_timeout": 0})
    elasticip.allocate(ctx=ctx)
    allocation_id = ctx.instance.runtime_properties["allocation_id"]
    ec2.associate_address(AllocationId=allocation_id, InstanceId=new_instance())

    with pytest.raises(RecoverableError) as retry:
        elasticip.release(ctx=ctx)

    assert retry.value.retry_after == 7
    assert [a["AllocationId"] for a in addresses(ec2)] == [allocation_id]
    assert ctx.instance.runtime_properties["allocation_id"] == allocation_id


# --- validation -------------------------------------------------------------


def test_validation_passes_for_a_new_address_without_resource_id(address_ctx, calls):
    elasticip.creation_validation(ctx=address_ctx())
    assert calls.mutating == []


def test_validation_refuses_a_new_address_whose_resource_id_already_exists(address_ctx, ec2):
    existing = ec2.allocate_address(Domain="vpc")
    with pytest.raises(NonRecoverableError) as error:
        elasticip.creation_validation(ctx=address_ctx(resource_id=existing["PublicIp"]))
    message = str(error.value)
    assert "node 'ip'" in message and "'resource_id'" in message and "already exists" in message
    assert "use_external_resource" in message


def test_validation_refuses_an_external_address_that_does_not_exist(address_ctx):
    with pytest.raises(NonRecoverableError) as error:
        elasticip.creation_validation(ctx=address_ctx(use_external_resource=True, resource_id="203.0.113.10"))
    message = str(error.value)
    assert "node 'ip'" in message and "'resource_id'" in message and "does not exist" in message


def test_validation_refuses_an_external_address_without_resource_id(address_ctx):
    with pytest.raises(NonRecoverableError, match="'resource_id' is empty"):
        elasticip.creation_validation(ctx=address_ctx(use_external_resource=True))


def test_validation_passes_for_an_external_address_that_exists(address_ctx, ec2, calls):
    existing = ec2.allocate_address(Domain="vpc")
    ctx = address_ctx(use_external_resource=True, resource_id=existing["AllocationId"])
    elasticip.creation_validation(ctx=ctx)
    assert calls.mutating == [] and calls.dry_runs == []  # an external address is not allocated
    assert [a["AllocationId"] for a in ec2.describe_addresses()["Addresses"]] == [existing["AllocationId"]]


# --- associate ----------------------------------------------------------------


def test_associate_ties_the_address_to_the_instance(allocated, relationship_ctx, new_instance, ec2):
    instance_id = new_instance()
    ctx = relationship_ctx(instance_id, allocated.instance.runtime_properties)
    elasticip.associate(ctx=ctx)
    (address,) = addresses(ec2)
    assert address["InstanceId"] == instance_id
    assert ctx.target.instance.runtime_properties["association_id"] == address["AssociationId"]
    assert ctx.target.instance.runtime_properties["associated_instance_id"] == instance_id


def test_associate_records_the_elastic_ip_as_the_instances_public_ip_address(
    allocated, relationship_ctx, new_instance, calls
):
    ctx = relationship_ctx(new_instance(), allocated.instance.runtime_properties)
    elasticip.associate(ctx=ctx)
    assert (
        ctx.source.instance.runtime_properties["public_ip_address"]
        == allocated.instance.runtime_properties["aws_resource_id"]
    )
    assert calls.operations == ["AssociateAddress"]


def test_associate_uses_the_allocation_id_and_the_instance_id(allocated, relationship_ctx, new_instance, calls):
    sent = []
    ctx = relationship_ctx(new_instance(), allocated.instance.runtime_properties)
    client = connection.ec2_client(ctx.target.node.properties.get("aws_config"))
    client.meta.events.register(
        "provide-client-params.ec2.AssociateAddress", lambda params, **_: sent.append(dict(params)), unique_id="spy"
    )
    try:
        elasticip.associate(ctx=ctx)
    finally:
        client.meta.events.unregister("provide-client-params.ec2.AssociateAddress", unique_id="spy")
    assert sent == [
        {
            "AllocationId": allocated.instance.runtime_properties["allocation_id"],
            "InstanceId": ctx.source.instance.runtime_properties["aws_resource_id"],
        }
    ]


def test_if_both_are_external_associate_only_sets_the_runtime_properties(relationship_ctx, new_instance, ec2, calls):
    instance_id = new_instance()
    existing = ec2.allocate_address(Domain="vpc")
    runtime = {"aws_resource_id": existing["PublicIp"], "allocation_id": existing["AllocationId"]}
    ctx = relationship_ctx(instance_id, runtime, instance_external=True, address_external=True)
    elasticip.associate(ctx=ctx)
    assert calls.mutating == []
    assert "AssociateAddress" not in calls.operations
    assert ctx.source.instance.runtime_properties["public_ip_address"] == existing["PublicIp"]
    assert ctx.target.instance.runtime_properties["associated_instance_id"] == instance_id
    assert not addresses(ec2)[0].get("InstanceId")


def test_if_only_the_address_is_external_associate_still_associates(relationship_ctx, new_instance, ec2):
    instance_id = new_instance()
    existing = ec2.allocate_address(Domain="vpc")
    runtime = {"aws_resource_id": existing["PublicIp"], "allocation_id": existing["AllocationId"]}
    ctx = relationship_ctx(instance_id, runtime, address_external=True)
    elasticip.associate(ctx=ctx)
    assert addresses(ec2)[0]["InstanceId"] == instance_id


def test_if_only_the_instance_is_external_associate_still_associates(allocated, relationship_ctx, new_instance, ec2):
    instance_id = new_instance()
    ctx = relationship_ctx(instance_id, allocated.instance.runtime_properties, instance_external=True)
    elasticip.associate(ctx=ctx)
    assert addresses(ec2)[0]["InstanceId"] == instance_id


def test_associate_without_an_instance_id_fails_naming_the_relationship(allocated, relationship_ctx, calls):
    ctx = relationship_ctx("", allocated.instance.runtime_properties)
    with pytest.raises(NonRecoverableError, match="relationship 'server' -> 'ip'.*Fix:"):
        elasticip.associate(ctx=ctx)
    assert calls.mutating == []


# --- disassociate -------------------------------------------------------------


@pytest.fixture
def associated(allocated, relationship_ctx, new_instance):
    """A relationship context whose address the plugin associated with a new instance."""
    ctx = relationship_ctx(new_instance(), allocated.instance.runtime_properties)
    elasticip.associate(ctx=ctx)
    return ctx


def test_disassociate_unties_the_address_from_the_instance(associated, ec2):
    elasticip.disassociate(ctx=associated)
    (address,) = addresses(ec2)
    assert not address.get("InstanceId")
    assert "association_id" not in associated.target.instance.runtime_properties
    assert "associated_instance_id" not in associated.target.instance.runtime_properties


def test_disassociate_forgets_the_elastic_ip_as_the_instances_public_ip_address(associated, ec2, calls):
    elasticip.disassociate(ctx=associated)
    assert "public_ip_address" not in associated.source.instance.runtime_properties
    assert calls.operations == ["DisassociateAddress"]


def test_disassociate_leaves_alone_an_address_moved_to_another_instance(associated, new_instance, ec2, calls):
    other = new_instance()
    made_long_ago(associated.target.instance.runtime_properties)  # moved after the propagation window
    allocation_id = associated.target.instance.runtime_properties["allocation_id"]
    moved = ec2.associate_address(AllocationId=allocation_id, InstanceId=other, AllowReassociation=True)
    elasticip.disassociate(ctx=associated)
    (address,) = addresses(ec2)
    assert address["InstanceId"] == other
    assert address["AssociationId"] == moved["AssociationId"]


def test_disassociate_of_an_address_that_no_longer_exists_counts_as_done(associated, ec2):
    made_long_ago(associated.target.instance.runtime_properties)
    ec2.release_address(AllocationId=associated.target.instance.runtime_properties["allocation_id"])
    elasticip.disassociate(ctx=associated)
    assert "association_id" not in associated.target.instance.runtime_properties


def test_disassociate_of_an_address_already_disassociated_counts_as_done(associated, ec2, calls):
    made_long_ago(associated.target.instance.runtime_properties)
    ec2.disassociate_address(AssociationId=associated.target.instance.runtime_properties["association_id"])
    elasticip.disassociate(ctx=associated)
    (address,) = addresses(ec2)
    assert not address.get("AssociationId")
    assert "association_id" not in associated.target.instance.runtime_properties


def test_if_both_are_external_disassociate_only_unassigns(relationship_ctx, new_instance, ec2, calls):
    instance_id = new_instance()
    existing = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=existing["AllocationId"], InstanceId=instance_id)
    runtime = {"aws_resource_id": existing["PublicIp"], "allocation_id": existing["AllocationId"]}
    ctx = relationship_ctx(instance_id, runtime, instance_external=True, address_external=True)
    elasticip.associate(ctx=ctx)
    elasticip.disassociate(ctx=ctx)
    assert calls.mutating == []
    assert addresses(ec2)[0]["InstanceId"] == instance_id
    assert "associated_instance_id" not in ctx.target.instance.runtime_properties
    assert "public_ip_address" not in ctx.source.instance.runtime_properties


def test_disassociate_when_the_instance_was_never_created_does_nothing(allocated, relationship_ctx, calls):
    ctx = relationship_ctx("", allocated.instance.runtime_properties)
    elasticip.disassociate(ctx=ctx)
    assert calls.operations == []


def test_a_relationship_operation_builds_each_sides_client_from_that_sides_own_node(
    allocated, relationship_ctx, new_instance, monkeypatch
):
    """The address's aws_config serves the association."""
    sent = []
    build = connection.ec2_client

    def recording_client(aws_config):
        client = build(aws_config)
        side = {7: "server", 8: "ip"}[aws_config["max_attempts"]]
        client.meta.events.register("before-call.ec2", lambda model, **_: sent.append((side, model.name)))
        return client

    ctx = relationship_ctx(new_instance(), allocated.instance.runtime_properties)
    ctx.source.node.properties["aws_config"] = {"max_attempts": 7}
    ctx.target.node.properties["aws_config"] = {"max_attempts": 8}
    monkeypatch.setattr(connection, "ec2_client", recording_client)
    elasticip.associate(ctx=ctx)
    assert sent == [("ip", "AssociateAddress")]
