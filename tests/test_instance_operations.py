"""cloudify.aws.nodes.Instance operations called directly with mock contexts,
against the moto server: the RunInstances request, validation errors, waiting,
delete and check_status."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from cloudify.exceptions import NonRecoverableError, OperationRetry, RecoverableError, WorkflowFailed
from cloudify.mocks import MockCloudifyContext, MockNodeContext, MockNodeInstanceContext, MockRelationshipContext
from cloudify.mocks import MockRelationshipSubjectContext as Subject

from ec2 import aws, connection, constants, instance, instance_request
from ec2.errors import PluginError
from tests.support import IMAGE_ID, interrupted_create, live_instances, owned_by

KEYPAIR_REL = "cloudify.aws.relationships.instance_connected_to_keypair"
GROUP_REL = "cloudify.aws.relationships.instance_connected_to_security_group"
NO_AGENT = {"install_method": "none"}


def target(node_id: str, aws_id: str, rel_type: str, external: bool = False) -> MockRelationshipContext:
    return MockRelationshipContext(
        Subject(
            MockNodeContext(node_id, {"use_external_resource": external, "resource_id": aws_id if external else ""}),
            MockNodeInstanceContext(f"{node_id}_1", {"aws_resource_id": aws_id}),
        ),
        type=rel_type,
    )


@pytest.fixture
def server_ctx(make_ctx):
    """An Instance node's context; keyword arguments override its properties."""

    def build(relationships=None, provider_context=None, runtime_properties=None, **properties):
        return make_ctx(
            {
                "image_id": IMAGE_ID,
                "instance_type": "t3.micro",
                "parameters": {},
                "agent_config": NO_AGENT,
                "wait_timeout": 30,
                "wait_interval": 0,
                "retry_after": 7,
                **properties,
            },
            node_id="server",
            instance_id="server_abc123",
            relationships=relationships or [],
            provider_context=provider_context,
            runtime_properties=runtime_properties,
        )

    return build


def request_for(ctx) -> dict:
    """The RunInstances request the plugin would send for this context."""
    return instance_request.build_request(instance_request.read(ctx), instance_request.parse(ctx.node.properties))


# --- parameters ---------------------------------------------------------------


def test_an_unknown_parameters_key_is_refused_listing_the_accepted_keys(server_ctx, calls):
    ctx = server_ctx(parameters={"key_nmae": "oops"})
    with pytest.raises(NonRecoverableError) as error:
        instance.run_instances(ctx=ctx)
    message = str(error.value)
    assert "'server'" in message and "parameters" in message and "key_nmae" in message
    assert "key_name" in message and "placement" in message and "MetadataOptions" in message
    assert calls.operations == []


@pytest.mark.parametrize(
    ("boto2", "value", "expected"),
    [
        ("key_name", "k", {"KeyName": "k"}),
        ("security_groups", ["web"], {"SecurityGroups": ["web"]}),
        ("security_group_ids", ["sg-12345678"], {"SecurityGroupIds": ["sg-12345678"]}),
        ("user_data", "#!/bin/sh\n", {"UserData": "#!/bin/sh\n"}),
        ("placement", "us-east-1a", {"Placement": {"AvailabilityZone": "us-east-1a"}}),
        ("subnet_id", "subnet-1234abcd", {"SubnetId": "subnet-1234abcd"}),
        ("private_ip_address", "172.31.0.10", {"PrivateIpAddress": "172.31.0.10"}),
        ("instance_profile_name", "role", {"IamInstanceProfile": {"Name": "role"}}),
        ("instance_profile_arn", "arn:aws:iam::1:x", {"IamInstanceProfile": {"Arn": "arn:aws:iam::1:x"}}),
        ("ebs_optimized", "true", {"EbsOptimized": True}),
        ("monitoring_enabled", True, {"Monitoring": {"Enabled": True}}),
        ("disable_api_termination", False, {"DisableApiTermination": False}),
        ("instance_initiated_shutdown_behavior", "stop", {"InstanceInitiatedShutdownBehavior": "stop"}),
        ("placement_group", "cluster-1", {"Placement": {"GroupName": "cluster-1"}}),
        ("tenancy", "dedicated", {"Placement": {"Tenancy": "dedicated"}}),
        ("kernel_id", "aki-12345678", {"KernelId": "aki-12345678"}),
        ("ramdisk_id", "ari-12345678", {"RamdiskId": "ari-12345678"}),
        ("additional_info", "info", {"AdditionalInfo": "info"}),
        ("client_token", "my-token", {"ClientToken": "my-token"}),
    ],
)
def test_each_boto2_parameter_is_translated_to_its_run_instances_field(server_ctx, boto2, value, expected):
    assert instance_request.translate_parameters({boto2: value}) == expected


def test_boto2_placement_keys_combine_into_one_placement(server_ctx):
    ctx = server_ctx(parameters={"placement": "us-east-1b", "placement_group": "g", "tenancy": "default"})
    assert instance_request.translate_parameters(ctx.node.properties["parameters"])["Placement"] == {
        "AvailabilityZone": "us-east-1b",
        "GroupName": "g",
        "Tenancy": "default",
    }


def test_the_two_spellings_of_one_setting_must_agree(server_ctx):
    ctx = server_ctx(parameters={"subnet_id": "subnet-1111aaaa", "SubnetId": "subnet-2222bbbb"})
    with pytest.raises(PluginError, match="SubnetId"):
        instance_request.translate_parameters(ctx.node.properties["parameters"])


def test_min_and_max_count_are_the_plugins_own(server_ctx):
    with pytest.raises(PluginError, match="MaxCount"):
        request_for(server_ctx(parameters={"MaxCount": 3}))


def test_a_malformed_boto3_value_is_refused_before_aws_is_called(server_ctx, calls):
    ctx = server_ctx(parameters={"MetadataOptions": {"HttpTokens": 5}})
    with pytest.raises(NonRecoverableError, match="HttpTokens"):
        instance.run_instances(ctx=ctx)
    assert calls.operations == []


@pytest.mark.parametrize(
    ("prop", "value"), [("image_id", ""), ("instance_type", ""), ("image_id", "ubuntu"), ("instance_type", "large")]
)
def test_image_and_type_are_required_and_checked_before_aws_is_called(server_ctx, calls, prop, value):
    with pytest.raises(NonRecoverableError) as error:
        instance.run_instances(ctx=server_ctx(**{prop: value}))
    assert f"property '{prop}'" in str(error.value) and "Fix:" in str(error.value)
    assert calls.operations == []


@pytest.mark.parametrize(("prop", "value"), [("wait_timeout", -1), ("wait_interval", "soon"), ("retry_after", 0)])
def test_bad_waiting_properties_are_refused_before_aws_is_called(server_ctx, calls, prop, value):
    with pytest.raises(NonRecoverableError) as error:
        instance.run_instances(ctx=server_ctx(**{prop: value}))
    assert "'server'" in str(error.value) and prop in str(error.value)
    assert calls.operations == []


# --- key pair, groups, provider context -----------------------------------------


def test_the_connected_key_pair_is_the_instance_key(server_ctx):
    request = request_for(server_ctx(relationships=[target("key", "my-key", KEYPAIR_REL)]))
    assert request["KeyName"] == "my-key"


def test_two_key_pair_relationships_are_an_error(server_ctx):
    ctx = server_ctx(relationships=[target("a", "key-a", KEYPAIR_REL), target("b", "key-b", KEYPAIR_REL)])
    with pytest.raises(PluginError, match="one key pair"):
        request_for(ctx)


def test_a_key_name_disagreeing_with_the_connected_key_pair_is_an_error(server_ctx):
    ctx = server_ctx(relationships=[target("key", "key-a", KEYPAIR_REL)], parameters={"key_name": "key-b"})
    with pytest.raises(PluginError, match="key_name"):
        request_for(ctx)


def test_security_groups_come_from_relationships_parameters_and_the_provider_context(server_ctx):
    ctx = server_ctx(
        relationships=[target("g1", "sg-11111111", GROUP_REL), target("g2", "sg-22222222", GROUP_REL)],
        parameters={"security_group_ids": ["sg-33333333", "sg-11111111"]},
        provider_context={"resources": {"agents_security_group": {"id": "sg-44444444"}}},
    )
    assert request_for(ctx)["SecurityGroupIds"] == [
        "sg-11111111",
        "sg-22222222",
        "sg-33333333",
        "sg-44444444",
    ]


def test_the_provider_contexts_agents_keypair_is_the_default_key(server_ctx):
    ctx = server_ctx(provider_context={"resources": {"agents_keypair": {"id": "agents-key"}}})
    assert request_for(ctx)["KeyName"] == "agents-key"


def test_key_name_in_parameters_wins_over_the_provider_context(server_ctx):
    ctx = server_ctx(
        parameters={"key_name": "mine"}, provider_context={"resources": {"agents_keypair": {"id": "agents-key"}}}
    )
    assert request_for(ctx)["KeyName"] == "mine"


def test_a_missing_provider_context_is_tolerated(server_ctx):
    request = request_for(server_ctx(provider_context={}))
    assert "KeyName" not in request and "SecurityGroupIds" not in request


def test_a_relationship_type_derived_from_instance_connected_to_keypair_counts(deploy, tmp_path, ec2):
    deployment = deploy(
        {
            "key": {
                "type": "cloudify.aws.nodes.KeyPair",
                "properties": {"private_key_path": str(tmp_path / "derived-key.pem")},
            },
            "server": {
                "type": "cloudify.aws.nodes.Instance",
                "properties": {"image_id": IMAGE_ID, "instance_type": "t3.micro", "agent_config": NO_AGENT},
                "relationships": [{"type": "my.uses_key", "target": "key"}],
            },
        },
        relationships={"my.uses_key": {"derived_from": KEYPAIR_REL}},
    )
    deployment.install()
    (server,) = live_instances(ec2)
    assert server["KeyName"] == "derived-key"


def test_a_new_instance_joins_an_external_security_group(server_ctx):
    ctx = server_ctx(relationships=[target("group", "sg-55555555", GROUP_REL, external=True)])
    assert request_for(ctx)["SecurityGroupIds"] == ["sg-55555555"]


# --- an external instance's relationships -------------------------------------------


@pytest.fixture
def external_server(server_ctx, ec2):
    """An external Instance context for an instance that exists; takes its relationships."""
    instance_id = ec2.run_instances(ImageId=IMAGE_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]

    def build(*relationships):
        return server_ctx(
            use_external_resource=True, resource_id=instance_id, image_id="", relationships=list(relationships)
        )

    return build


@pytest.mark.parametrize("operation", ["run_instances", "creation_validation"])
def test_an_external_instance_connected_to_a_new_security_group_is_refused(external_server, calls, operation):
    ctx = external_server(target("web_group", "sg-66666666", GROUP_REL))
    with pytest.raises(NonRecoverableError) as error:
        getattr(instance, operation)(ctx=ctx)
    message = str(error.value)
    assert "node 'server'" in message and "instance_connected_to_security_group" in message
    assert "'web_group'" in message and "use_external_resource" in message and "Fix:" in message
    assert calls.operations == []
    assert "aws_resource_id" not in ctx.instance.runtime_properties


@pytest.mark.parametrize("operation", ["run_instances", "creation_validation"])
def test_an_external_instance_connected_to_an_external_security_group_is_accepted(external_server, operation, calls):
    ctx = external_server(target("web_group", "sg-66666666", GROUP_REL, external=True))
    getattr(instance, operation)(ctx=ctx)
    assert calls.mutating == [] and calls.dry_runs == []  # adopted, not launched


def test_an_external_instance_connected_to_a_new_key_pair_is_a_warning(external_server, caplog):
    ctx = external_server(target("key", "new-key", KEYPAIR_REL))
    with caplog.at_level("WARNING", logger=ctx.logger.name):
        instance.run_instances(ctx=ctx)
    assert ctx.instance.runtime_properties["external_resource"] is True
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "'key'" in warning and "keeps the key" in warning


def test_an_external_instance_connected_to_an_external_key_pair_logs_no_warning(external_server, caplog):
    ctx = external_server(target("key", "old-key", KEYPAIR_REL, external=True))
    with caplog.at_level("WARNING", logger=ctx.logger.name):
        instance.run_instances(ctx=ctx)
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []


# --- a malformed external resource_id ---------------------------------------------


@pytest.mark.parametrize("operation", ["run_instances", "creation_validation", "start", "check_status"])
@pytest.mark.parametrize("resource_id", ["i-xyz", "i-0123456789abcdef", "0123456789abcdef0", "I-0123456789ABCDEF0"])
def test_a_malformed_external_resource_id_is_refused_before_aws_is_called(server_ctx, calls, operation, resource_id):
    ctx = server_ctx(use_external_resource=True, resource_id=resource_id, image_id="")
    with pytest.raises(NonRecoverableError) as error:
        getattr(instance, operation)(ctx=ctx)
    message = str(error.value)
    assert "node 'server': property 'resource_id'" in message and repr(resource_id) in message
    assert "Fix:" in message and "i-0123456789abcdef0" in message
    assert calls.operations == []


@pytest.mark.parametrize("resource_id", ["i-12345678", "i-0123456789abcdef0"])
def test_both_instance_id_lengths_are_accepted(resource_id):
    assert instance_request.INSTANCE_ID_PATTERN.match(resource_id)


# --- request details --------------------------------------------------------------


def test_the_client_token_is_the_same_for_an_identical_request(server_ctx):
    first = request_for(server_ctx(tags={"team": "qa"}))["ClientToken"]
    again = request_for(server_ctx(tags={"team": "qa"}))["ClientToken"]
    assert first == again
    assert first.isascii() and len(first) <= 64


@pytest.mark.parametrize(
    "changed",
    [
        {"tags": {"team": "ops"}},
        {"instance_type": "t3.small"},
        {"parameters": {"user_data": "#!/bin/sh\necho changed\n"}},
        {"relationships": [target("g", "sg-11111111", GROUP_REL)]},
    ],
)
def test_the_client_token_changes_when_the_request_changes(server_ctx, changed):
    before = request_for(server_ctx(tags={"team": "qa"}))["ClientToken"]
    after = request_for(server_ctx(**{"tags": {"team": "qa"}, **changed}))["ClientToken"]
    assert before != after
    assert after.isascii() and len(after) <= 64


def test_the_client_token_differs_between_node_instances_and_deployments(server_ctx, make_ctx):
    request = {"ImageId": IMAGE_ID, "InstanceType": "t3.micro", "MinCount": 1, "MaxCount": 1}
    ours = instance_request.client_token(instance_request.read(server_ctx()), request)
    other_instance = instance_request.client_token(
        instance_request.read(make_ctx({}, instance_id="server_other")), request
    )
    other_deployment = instance_request.client_token(
        instance_request.read(make_ctx({}, instance_id="server_abc123", deployment_id="d2")), request
    )
    assert len({ours, other_instance, other_deployment}) == 3


def test_the_client_token_ignores_a_token_already_in_the_request(server_ctx):
    known = instance_request.read(server_ctx())
    request = {"ImageId": IMAGE_ID, "InstanceType": "t3.micro"}
    assert instance_request.client_token(known, request) == instance_request.client_token(
        known, {**request, "ClientToken": "old"}
    )


def test_a_client_token_in_parameters_replaces_the_plugins_own(server_ctx):
    assert request_for(server_ctx(parameters={"client_token": "mine"}))["ClientToken"] == "mine"


class FakeAgent:
    def init_script(self) -> str:
        return "#!/bin/sh\nagent\n"


def test_the_agent_init_script_gives_the_same_user_data_and_token_each_time(server_ctx, monkeypatch):
    monkeypatch.setattr(instance_request.cloudify_internal, "get_install_method", lambda _: "init_script")
    monkeypatch.setattr(MockCloudifyContext, "agent", property(lambda _: FakeAgent()), raising=False)
    first = request_for(server_ctx(parameters={"user_data": "#cloud-config\n"}))
    again = request_for(server_ctx(parameters={"user_data": "#cloud-config\n"}))
    assert first["UserData"].startswith("Content-Type: multipart/mixed")
    assert first["UserData"] == again["UserData"]
    assert first["ClientToken"] == again["ClientToken"]


def test_run_instances_sends_the_token_and_all_tags_in_one_call(server_ctx, calls, ec2):
    ctx = server_ctx(tags={"team": "qa"})
    instance.run_instances(ctx=ctx)
    assert calls.mutating == ["RunInstances"]
    (server,) = live_instances(ec2)
    assert server["ClientToken"] == request_for(ctx)["ClientToken"]
    assert {t["Key"] for t in server["Tags"]} == {
        "Name",
        "team",
        constants.TAG_DEPLOYMENT_ID,
        constants.TAG_NODE_INSTANCE_ID,
    }


def test_create_records_the_instance_and_reservation_before_any_waiting(server_ctx, calls):
    ctx = server_ctx()
    instance.run_instances(ctx=ctx)
    assert ctx.instance.runtime_properties["aws_resource_id"].startswith("i-")
    assert ctx.instance.runtime_properties["reservation_id"].startswith("r-")
    assert "DescribeInstances" not in calls.operations[calls.operations.index("RunInstances") :]


def test_create_keeps_an_instance_already_recorded(server_ctx, ec2):
    ctx = server_ctx()
    instance.run_instances(ctx=ctx)
    instance.run_instances(ctx=ctx)
    assert len(live_instances(ec2)) == 1


def test_a_repeated_token_answered_with_a_terminated_instance_launches_a_new_one(server_ctx, monkeypatch):
    ctx = server_ctx()
    sent = []

    def fake_run(client, request, fresh_for=0.0):
        sent.append(request["ClientToken"])
        state = "terminated" if len(sent) == 1 else "pending"
        return {"ReservationId": "r-1", "Instances": [{"InstanceId": f"i-{len(sent)}", "State": {"Name": state}}]}

    monkeypatch.setattr(aws, "run_instance", fake_run)
    launched, _ = instance._run(None, ctx.instance, request_for(ctx), ctx.logger.info)
    assert launched["InstanceId"] == "i-2"
    assert sent[0] != sent[1] and len(sent[1]) <= 64


# --- waiting --------------------------------------------------------------------


def test_start_asks_the_workflow_to_retry_while_the_instance_is_not_running(server_ctx, monkeypatch):
    ctx = server_ctx(wait_timeout=0)
    instance.run_instances(ctx=ctx)
    monkeypatch.setattr(
        aws, "find_instances", lambda _, ids: {ids[0]: {"InstanceId": ids[0], "State": {"Name": "pending"}}}
    )
    with pytest.raises(OperationRetry) as retry:
        instance.start(ctx=ctx)
    assert retry.value.retry_after == 7
    assert "ip" not in ctx.instance.runtime_properties


def test_start_records_the_addresses_from_a_single_describe(server_ctx, calls, ec2):
    ctx = server_ctx()
    instance.run_instances(ctx=ctx)
    calls.operations.clear()
    instance.start(ctx=ctx)
    assert calls.operations == ["DescribeInstances"]
    (server,) = live_instances(ec2)
    assert ctx.instance.runtime_properties["public_dns_name"] == server["PublicDnsName"]


# --- stop and delete without a recorded instance ----------------------------------


def test_stop_with_no_instance_recorded_or_found_only_logs(server_ctx, calls):
    ctx = server_ctx()
    instance.stop(ctx=ctx)
    assert calls.mutating == []
    assert ctx.instance.runtime_properties == {}


def test_stop_with_no_instance_recorded_stops_the_one_tagged_as_this_node_instances(server_ctx, ec2):
    ctx = server_ctx()
    instance.run_instances(ctx=ctx)
    instance_id = ctx.instance.runtime_properties.pop("aws_resource_id")
    instance.stop(ctx=ctx)
    (stopped,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"]
    assert stopped["State"]["Name"] == "stopped"


def test_delete_with_no_instance_recorded_terminates_every_one_tagged_as_this_node_instances(server_ctx, ec2):
    ctx = server_ctx()
    interrupted_create(ctx)
    owner = owned_by(ctx, "instance")
    for _ in range(2):
        ec2.run_instances(ImageId=IMAGE_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1, TagSpecifications=owner)
    assert len(live_instances(ec2)) == 2
    instance.terminate(ctx=ctx)
    assert live_instances(ec2) == []


# --- delete -----------------------------------------------------------------------


def test_delete_of_an_instance_that_no_longer_exists_counts_as_done(server_ctx):
    ctx = server_ctx(runtime_properties={"aws_resource_id": "i-0123456789abcdef0", "reservation_id": "r-1"})
    instance.terminate(ctx=ctx)
    assert ctx.instance.runtime_properties == {}


def test_delete_of_an_external_instance_that_no_longer_exists_fails(server_ctx):
    ctx = server_ctx(
        use_external_resource=True,
        resource_id="i-0123456789abcdef0",
        runtime_properties={"aws_resource_id": "i-0123456789abcdef0", "external_resource": True},
    )
    with pytest.raises(NonRecoverableError, match="resource_id"):
        instance.terminate(ctx=ctx)


# --- validation and check_status ------------------------------------------------


def test_creation_validation_passes_for_an_available_image(server_ctx, calls, ec2):
    instance.creation_validation(ctx=server_ctx())
    assert calls.dry_runs == ["RunInstances"]
    assert calls.mutating == []
    assert ec2.describe_instances()["Reservations"] == []


def test_creation_validation_fails_for_an_image_the_account_cannot_use(server_ctx):
    with pytest.raises(NonRecoverableError) as error:
        instance.creation_validation(ctx=server_ctx(image_id="ami-0000000000000dead"))
    assert "'server'" in str(error.value) and "'image_id'" in str(error.value) and "Fix:" in str(error.value)


def test_creation_validation_fails_for_a_missing_key_name(server_ctx):
    with pytest.raises(NonRecoverableError, match="parameters.key_name"):
        instance.creation_validation(ctx=server_ctx(parameters={"key_name": "nope"}))


def test_creation_validation_fails_for_a_missing_subnet(server_ctx):
    with pytest.raises(NonRecoverableError, match="parameters.subnet_id"):
        instance.creation_validation(ctx=server_ctx(parameters={"subnet_id": "subnet-0000dead"}))


def test_creation_validation_fails_for_an_implausible_instance_type(server_ctx):
    with pytest.raises(NonRecoverableError, match="'instance_type'"):
        instance.creation_validation(ctx=server_ctx(instance_type="huge"))


def test_creation_validation_of_an_external_instance_requires_it_to_exist(server_ctx):
    ctx = server_ctx(use_external_resource=True, resource_id="i-0123456789abcdef0", image_id="")
    with pytest.raises(NonRecoverableError, match="resource_id"):
        instance.creation_validation(ctx=ctx)


def test_install_with_an_unavailable_image_fails_before_any_instance_exists(deploy, ec2, calls, capsys):
    node = {
        "type": "cloudify.aws.nodes.Instance",
        "properties": {"image_id": "ami-0000000000000dead", "instance_type": "t3.micro", "agent_config": NO_AGENT},
    }
    deployment = deploy({"server": node})
    with pytest.raises(WorkflowFailed):
        deployment.install()
    assert (
        "Task failed 'ec2.instance.creation_validation' -> node 'server': property 'image_id' "
        "names image 'ami-0000000000000dead', which is not available"
    ) in capsys.readouterr().out
    assert "RunInstances" not in calls.operations
    assert live_instances(ec2) == []


def test_check_status_fails_for_a_stopped_instance_and_says_how_to_fix_it(server_ctx, ec2):
    ctx = server_ctx()
    instance.run_instances(ctx=ctx)
    ec2.stop_instances(InstanceIds=[ctx.instance.runtime_properties["aws_resource_id"]])
    with pytest.raises(NonRecoverableError, match="stopped") as error:
        instance.check_status(ctx=ctx)
    assert "Fix: run the heal workflow" in str(error.value)


def test_check_status_without_a_recorded_instance_says_how_to_fix_it(server_ctx):
    with pytest.raises(NonRecoverableError, match="never created") as error:
        instance.check_status(ctx=server_ctx())
    assert "Fix: run the install workflow" in str(error.value)


def test_check_status_of_a_stopped_external_instance_says_how_to_fix_it(external_server, ec2):
    ctx = external_server()
    ec2.stop_instances(InstanceIds=[ctx.node.properties["resource_id"]])
    with pytest.raises(NonRecoverableError, match="stopped") as error:
        instance.check_status(ctx=ctx)
    assert "Fix: start it in AWS" in str(error.value)


def test_check_status_passes_for_a_running_instance(server_ctx):
    ctx = server_ctx()
    instance.run_instances(ctx=ctx)
    instance.start(ctx=ctx)
    instance.check_status(ctx=ctx)


def test_creation_validation_of_a_new_instance_fails_when_resource_id_names_an_existing_one(server_ctx, ec2):
    existing = ec2.run_instances(ImageId=IMAGE_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1)
    ctx = server_ctx(resource_id=existing["Instances"][0]["InstanceId"])
    with pytest.raises(NonRecoverableError, match="use_external_resource"):
        instance.creation_validation(ctx=ctx)


def test_a_stop_refused_while_the_instance_is_in_transition_is_retried(server_ctx, monkeypatch):
    class InTransition:
        def can_paginate(self, operation):
            return False

        def describe_instances(self, **_):
            return {"Reservations": [{"Instances": [{"InstanceId": "i-12345678", "State": {"Name": "pending"}}]}]}

        def stop_instances(self, **_):
            error = {"Error": {"Code": "IncorrectInstanceState", "Message": "pending"}}
            raise ClientError(error, "StopInstances")

    monkeypatch.setattr(connection, "ec2_client", lambda aws_config: InTransition())
    ctx = server_ctx(runtime_properties={"aws_resource_id": "i-12345678"})
    with pytest.raises(RecoverableError, match="IncorrectInstanceState"):
        instance.stop(ctx=ctx)


def test_start_of_an_instance_launched_a_moment_ago_waits_until_ec2_shows_it(server_ctx, monkeypatch):
    ctx = server_ctx()
    instance.run_instances(ctx=ctx)
    find_instances = aws.find_instances
    answers = iter([{}, {}])  # EC2 does not know the new instance for two describes
    monkeypatch.setattr(aws, "find_instances", lambda client, ids: next(answers, None) or find_instances(client, ids))
    monkeypatch.setattr(aws.time, "sleep", lambda _seconds: None)
    instance.start(ctx=ctx)
    assert ctx.instance.runtime_properties["ip"]


def test_start_of_an_instance_ec2_does_not_know_with_no_record_of_its_launch_fails_for_good(server_ctx):
    # A classic-era record (no created_at): a NotFound is believed at once.
    ctx = server_ctx(runtime_properties={"aws_resource_id": "i-0123456789abcdef0"})
    with pytest.raises(NonRecoverableError, match="not-found. Fix: run the heal workflow"):
        instance.start(ctx=ctx)


def test_start_of_a_terminated_instance_fails_for_good(server_ctx, ec2):
    ctx = server_ctx()
    instance.run_instances(ctx=ctx)
    ec2.terminate_instances(InstanceIds=[ctx.instance.runtime_properties["aws_resource_id"]])
    with pytest.raises(NonRecoverableError, match="terminated"):
        instance.start(ctx=ctx)


def test_delete_of_an_external_instance_never_recorded_is_simply_forgotten(server_ctx, calls):
    ctx = server_ctx(use_external_resource=True, resource_id="i-xyz", image_id="")
    instance.terminate(ctx=ctx)
    assert calls.operations == []
    assert ctx.instance.runtime_properties == {}
