"""ec2/utils.py: the shared error policy, external short-circuits,
bookkeeping and waiting policy."""

import socket

import boto3
import pytest
from botocore.stub import Stubber
from cloudify.exceptions import NonRecoverableError, RecoverableError

from ec2 import connection, utils


@pytest.fixture
def ctx(make_ctx):
    return make_ctx({})


def stubbed_error(code: str, status: int):
    client = boto3.client("ec2", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_client_error(
        "describe_key_pairs", service_error_code=code, service_message="nope", http_status_code=status
    )
    stubber.activate()
    return client


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "Throttling", "ThrottlingException"])
def test_throttling_is_retryable(ctx, code):
    with pytest.raises(RecoverableError):
        utils.call(ctx, stubbed_error(code, 400), "describe_key_pairs")


def test_a_5xx_answer_is_retryable(ctx):
    with pytest.raises(RecoverableError):
        utils.call(ctx, stubbed_error("InternalError", 500), "describe_key_pairs")


def test_a_bad_request_is_not_retryable_and_carries_the_aws_message(ctx):
    with pytest.raises(NonRecoverableError) as error:
        utils.call(ctx, stubbed_error("InvalidParameterValue", 400), "describe_key_pairs")
    assert "InvalidParameterValue: nope" in str(error.value)
    assert "node 'node'" in str(error.value)


def test_not_found_means_already_gone_when_allowed(ctx):
    client = connection.ec2_client({})
    assert utils.call(ctx, client, "delete_security_group", not_found_ok=True, GroupId="sg-12345678") is None


def test_not_found_is_an_error_when_not_allowed(ctx):
    client = connection.ec2_client({})
    with pytest.raises(NonRecoverableError, match="InvalidGroup.NotFound"):
        utils.call(ctx, client, "delete_security_group", GroupId="sg-12345678")


def test_named_codes_can_be_made_retryable(ctx):
    with pytest.raises(RecoverableError):
        utils.call(
            ctx, stubbed_error("DependencyViolation", 400), "describe_key_pairs", retry_codes=("DependencyViolation",)
        )


def test_an_unreachable_endpoint_is_retryable(ctx):
    client = connection.ec2_client({"endpoint_url": "http://127.0.0.1:9", "max_attempts": 1})
    with pytest.raises(RecoverableError, match="did not get through"):
        utils.call(ctx, client, "describe_key_pairs")


def test_missing_credentials_are_a_clear_error(ctx, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = connection.ec2_client({})
    with pytest.raises(NonRecoverableError, match="aws_config"):
        utils.call(ctx, client, "describe_key_pairs")


def test_an_external_resource_that_exists_is_recorded(make_ctx):
    ctx = make_ctx({"use_external_resource": True, "resource_id": "thing"})
    assert utils.adopt_external(ctx, "thing", lambda wanted: "id-" + wanted)
    assert ctx.instance.runtime_properties["aws_resource_id"] == "id-thing"


def test_an_external_resource_that_does_not_exist_fails_naming_node_property_and_fix(make_ctx):
    ctx = make_ctx({"use_external_resource": True, "resource_id": "thing"})
    with pytest.raises(NonRecoverableError) as error:
        utils.adopt_external(ctx, "thing", lambda wanted: None)
    message = str(error.value)
    assert "node 'node'" in message and "'resource_id'" in message and "Fix:" in message


def test_a_new_resource_is_not_short_circuited(ctx):
    assert utils.adopt_external(ctx, "thing", lambda wanted: pytest.fail("must not look up")) is False


def test_deleting_an_external_resource_only_unassigns_it(make_ctx):
    ctx = make_ctx({"use_external_resource": True, "resource_id": "thing"}, runtime_properties={"aws_resource_id": "x"})
    assert utils.release_external(ctx, "thing", lambda wanted: wanted)
    assert "aws_resource_id" not in ctx.instance.runtime_properties


def test_deleting_an_external_resource_that_vanished_fails(make_ctx):
    ctx = make_ctx({"use_external_resource": True, "resource_id": "thing"}, runtime_properties={"aws_resource_id": "x"})
    with pytest.raises(NonRecoverableError):
        utils.release_external(ctx, "thing", lambda wanted: None)


def test_waiting_returns_at_once_when_the_state_is_already_reached(ctx):
    assert utils.wait_for(ctx, ctx.node, "thing", lambda: "running", "running")
    assert ctx.operation._operation_retry is None


def test_waiting_hands_back_to_the_workflow_after_the_timeout(make_ctx):
    ctx = make_ctx({"wait_timeout": 0, "wait_interval": 0, "retry_after": 7})
    assert not utils.wait_for(ctx, ctx.node, "thing", lambda: "pending", "running")
    assert ctx.operation._operation_retry.retry_after == 7


def test_waiting_logs_every_poll(make_ctx, caplog):
    states = iter(["pending", "pending", "running"])
    ctx = make_ctx({"wait_timeout": 5, "wait_interval": 0})
    with caplog.at_level("INFO"):
        assert utils.wait_for(ctx, ctx.node, "thing", lambda: next(states), "running")
    assert sum("thing:" in record.getMessage() for record in caplog.records) == 3


def test_a_failed_state_stops_the_wait(ctx):
    with pytest.raises(NonRecoverableError, match="terminated"):
        utils.wait_for(ctx, ctx.node, "thing", lambda: "terminated", "running", failed=("terminated",))


def test_tags_must_be_a_dictionary(make_ctx):
    ctx = make_ctx({"tags": ["a"]})
    with pytest.raises(NonRecoverableError, match="'tags'"):
        utils.validate_tags(ctx)


def test_creation_tags_carry_user_tags_and_ownership(make_ctx):
    ctx = make_ctx({"tags": {"team": "qa"}}, deployment_id="dep1", instance_id="node_1")
    (spec,) = utils.creation_tags(ctx, "key-pair")
    tags = {tag["Key"]: tag["Value"] for tag in spec["Tags"]}
    assert tags == {"team": "qa", "cloudify:deployment-id": "dep1", "cloudify:node-instance-id": "node_1"}


@pytest.mark.parametrize("prop, value", [("wait_timeout", "soon"), ("wait_interval", -1), ("retry_after", 0)])
def test_waiting_properties_that_are_not_seconds_are_refused_naming_the_property(make_ctx, prop, value):
    ctx = make_ctx({prop: value})
    with pytest.raises(NonRecoverableError) as error:
        utils.validate_wait_settings(ctx)
    assert f"property '{prop}'" in str(error.value) and "Fix:" in str(error.value)


def test_a_read_timeout_is_retryable(ctx):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        client = connection.ec2_client({"endpoint_url": endpoint, "read_timeout": 1, "max_attempts": 1})
        with pytest.raises(RecoverableError, match="did not get through"):
            utils.call(ctx, client, "describe_key_pairs")


def test_ownership_tags_work_without_a_deployment_id(make_ctx):
    ctx = make_ctx({}, deployment_id=None)
    (spec,) = utils.creation_tags(ctx, "key-pair")
    assert {"Key": "cloudify:deployment-id", "Value": "local"} in spec["Tags"]
