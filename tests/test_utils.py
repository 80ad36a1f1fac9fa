"""The shared pieces: the one error boundary, the access layer's error
meanings, the external short-circuits, bookkeeping and the waiting policy."""

import socket

import pytest
from botocore.exceptions import ClientError
from cloudify.exceptions import NonRecoverableError, OperationRetry, RecoverableError

from ec2 import connection, errors, ownership, utils
from tests.support import stubbed_error


@pytest.fixture
def ctx(make_ctx):
    return make_ctx({})


@utils.ec2_operation
def describe_keys(ctx, client, **_):
    """A minimal operation: one describe through the error boundary."""
    return client.describe_key_pairs()


@utils.ec2_operation
def raising(ctx, error, **_):
    raise error


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "Throttling", "ThrottlingException"])
def test_throttling_is_retryable(ctx, code):
    with pytest.raises(RecoverableError):
        describe_keys(ctx=ctx, client=stubbed_error(code, 400))


def test_a_5xx_answer_is_retryable(ctx):
    with pytest.raises(RecoverableError):
        describe_keys(ctx=ctx, client=stubbed_error("InternalError", 500))


def test_a_5xx_answer_that_is_not_xml_keeps_the_node_label(ctx):
    error = ClientError({"Error": {}, "ResponseMetadata": {"HTTPStatusCode": 502}}, "DescribeKeyPairs")
    with pytest.raises(RecoverableError) as raised:
        raising(ctx=ctx, error=error)
    assert "node 'node'" in str(raised.value) and "HTTP 502" in str(raised.value)


def test_a_bad_request_is_not_retryable_and_carries_the_aws_message(ctx):
    with pytest.raises(NonRecoverableError) as error:
        describe_keys(ctx=ctx, client=stubbed_error("InvalidParameterValue", 400))
    assert "InvalidParameterValue: nope" in str(error.value)
    assert "node 'node'" in str(error.value)


def test_not_ready_is_retried_after_the_nodes_retry_after(make_ctx):
    ctx = make_ctx({"retry_after": 7})
    with pytest.raises(RecoverableError) as raised:
        raising(ctx=ctx, error=errors.NotReady("busy"))
    assert raised.value.retry_after == 7 and not isinstance(raised.value, OperationRetry)


def test_an_unreachable_endpoint_is_retryable(ctx):
    client = connection.ec2_client({"endpoint_url": "http://127.0.0.1:9", "max_attempts": 1})
    with pytest.raises(RecoverableError, match="did not get through"):
        describe_keys(ctx=ctx, client=client)


def test_missing_credentials_are_a_clear_error(ctx, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(NonRecoverableError, match="aws_config"):
        describe_keys(ctx=ctx, client=connection.ec2_client({}))


def test_bad_input_is_a_non_recoverable_error_naming_the_node_the_property_and_the_fix(ctx):
    with pytest.raises(NonRecoverableError) as raised:
        raising(ctx=ctx, error=errors.BadInput("aws_config", "is wrong", "correct it"))
    assert str(raised.value) == "node 'node': property 'aws_config' is wrong. Fix: correct it."


def test_an_external_resource_that_exists_is_recorded(make_ctx):
    ctx = make_ctx({"use_external_resource": True, "resource_id": "thing"})
    utils.adopt_external(
        ctx.instance, ctx.logger.info, utils.parse_common(ctx.node.properties), "thing", lambda wanted: "id-" + wanted
    )
    assert ctx.instance.runtime_properties["aws_resource_id"] == "id-thing"


def test_an_external_resource_that_does_not_exist_fails_naming_property_and_fix(make_ctx):
    ctx = make_ctx({"use_external_resource": True, "resource_id": "thing"})
    with pytest.raises(errors.BadInput) as error:
        utils.adopt_external(
            ctx.instance, ctx.logger.info, utils.parse_common(ctx.node.properties), "thing", lambda wanted: None
        )
    assert "'resource_id'" in str(error.value) and "Fix:" in str(error.value)


def test_deleting_an_external_resource_only_unassigns_it(make_ctx):
    ctx = make_ctx({"use_external_resource": True, "resource_id": "thing"}, runtime_properties={"aws_resource_id": "x"})
    utils.release_external(
        ctx.instance, ctx.logger.info, utils.parse_common(ctx.node.properties), "thing", lambda wanted: wanted
    )
    assert "aws_resource_id" not in ctx.instance.runtime_properties


def test_deleting_an_external_resource_that_vanished_fails(make_ctx):
    ctx = make_ctx({"use_external_resource": True, "resource_id": "thing"}, runtime_properties={"aws_resource_id": "x"})
    with pytest.raises(errors.BadInput):
        utils.release_external(
            ctx.instance, ctx.logger.info, utils.parse_common(ctx.node.properties), "thing", lambda wanted: None
        )


def test_an_external_resource_that_was_never_recorded_is_simply_forgotten(make_ctx):
    ctx = make_ctx({"use_external_resource": True, "resource_id": "thing"})
    utils.release_external(
        ctx.instance,
        ctx.logger.info,
        utils.parse_common(ctx.node.properties),
        "thing",
        lambda wanted: pytest.fail("looked"),
    )
    assert ctx.instance.runtime_properties == {}


def test_creation_tags_carry_the_name_user_tags_and_ownership():
    owner = ownership.owner_tags("dep1", "node_1")
    assert ownership.creation_tags(owner, {"team": "qa"}, "web") == {
        "Name": "web",
        "team": "qa",
        "cloudify:deployment-id": "dep1",
        "cloudify:node-instance-id": "node_1",
    }


def test_a_read_timeout_is_retryable(ctx):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        client = connection.ec2_client({"endpoint_url": endpoint, "read_timeout": 1, "max_attempts": 1})
        with pytest.raises(RecoverableError, match="did not get through"):
            describe_keys(ctx=ctx, client=client)


def test_ownership_tags_work_without_a_deployment_id(make_ctx):
    ctx = make_ctx({}, deployment_id=None)
    assert ownership.owner_tags(ctx.deployment.id, ctx.instance.id)["cloudify:deployment-id"] == "local"
