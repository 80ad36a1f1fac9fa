"""tools/ec2proxy.py: the counting, fault-injecting proxy in front of the emulator, seen through boto3."""

from __future__ import annotations

import threading
import time

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from tests import support
from tests.support import IMAGE_ID
from tools.ec2proxy import Ec2Proxy, ProxyConfig, Refusal, action_class

ONE_ATTEMPT = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10)


@pytest.fixture
def proxy(moto_server):
    """Starts a proxy with the given config in front of the test emulator; stops it after the test."""
    started: list[Ec2Proxy] = []

    def start(**settings) -> Ec2Proxy:
        started.append(Ec2Proxy(moto_server.url, ProxyConfig(**settings)).start())
        return started[-1]

    yield start
    for each in started:
        each.stop()


def client_for(proxy: Ec2Proxy, config: Config = ONE_ATTEMPT):
    return support.client_for(proxy.url, config)


def error_of(call) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


def run_one(client, **kwargs) -> str:
    reservation = client.run_instances(ImageId=IMAGE_ID, MinCount=1, MaxCount=1, **kwargs)
    return reservation["Instances"][0]["InstanceId"]


def state_of(client, instance_id: str) -> tuple[str, int]:
    (reservation,) = client.describe_instances(InstanceIds=[instance_id])["Reservations"]
    state = reservation["Instances"][0]["State"]
    return state["Name"], state["Code"]


def test_calls_are_counted_by_action_in_order(proxy):
    counting = proxy()
    client = client_for(counting)
    client.create_key_pair(KeyName="k")
    client.describe_key_pairs()
    client.delete_key_pair(KeyName="k")
    assert counting.calls() == ["CreateKeyPair", "DescribeKeyPairs", "DeleteKeyPair"]
    assert counting.counts() == {"CreateKeyPair": 1, "DescribeKeyPairs": 1, "DeleteKeyPair": 1}


def test_the_mutating_view_leaves_out_reads(proxy):
    counting = proxy()
    client = client_for(counting)
    client.create_key_pair(KeyName="k")
    client.describe_key_pairs()
    client.allocate_address(Domain="vpc")
    assert counting.mutating == ["CreateKeyPair", "AllocateAddress"]


def test_dry_runs_are_counted_apart(proxy):
    counting = proxy()
    client = client_for(counting)
    assert error_of(lambda: client.create_key_pair(KeyName="k", DryRun=True)).response["Error"]["Code"] == (
        "DryRunOperation"
    )
    client.create_key_pair(KeyName="k")
    assert counting.dry_runs == ["CreateKeyPair"]
    assert counting.calls() == ["CreateKeyPair"]


def test_reset_forgets_the_calls_seen(proxy):
    counting = proxy()
    client_for(counting).describe_key_pairs()
    counting.reset()
    assert counting.calls() == []


def test_busy_time_is_measured_within_the_wall_time(proxy):
    counting = proxy()
    client = client_for(counting)
    started = time.monotonic()
    client.describe_key_pairs()
    client.describe_addresses()
    assert 0 < counting.busy_seconds() <= time.monotonic() - started


@pytest.mark.parametrize(
    ("kind", "status"),
    [("RequestLimitExceeded", 400), ("Unavailable", 503), ("ServiceUnavailable", 503), ("InternalError", 500)],
)
def test_a_request_fault_answers_an_ec2_error_and_ec2_does_nothing(proxy, ec2, kind, status):
    faulty = proxy(fault_rate=1.0, fault_kinds=(kind,))
    error = error_of(lambda: client_for(faulty).create_key_pair(KeyName="k"))
    assert error.response["Error"]["Code"] == kind
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error.response["ResponseMetadata"]["RequestId"]
    assert ec2.describe_key_pairs()["KeyPairs"] == []


def test_a_dropped_connection_reaches_boto3_as_closed_and_ec2_does_nothing(proxy, ec2):
    dropping = proxy(drop_rate=1.0)
    with pytest.raises(ConnectionClosedError):
        client_for(dropping).create_key_pair(KeyName="k")
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert dropping.outcomes() == {"dropped": 1}


def test_a_lost_response_closes_the_connection_after_ec2_acted(proxy, ec2):
    losing = proxy(lost_rate=1.0, lost_kinds=("drop",))
    with pytest.raises(ConnectionClosedError):
        client_for(losing).create_key_pair(KeyName="k")
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["k"]


def test_a_lost_response_can_be_a_500_after_ec2_acted(proxy, ec2):
    losing = proxy(lost_rate=1.0, lost_kinds=("error",))
    error = error_of(lambda: client_for(losing).create_key_pair(KeyName="k"))
    assert (error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]) == (
        "InternalError",
        500,
    )
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["k"]


def test_a_delayed_answer_times_the_client_out_after_ec2_acted(proxy, ec2):
    slow = proxy(delay_rate=1.0, delay_seconds=1.5)
    impatient = Config(retries={"total_max_attempts": 1}, read_timeout=0.5)
    with pytest.raises(ReadTimeoutError):
        client_for(slow, impatient).create_key_pair(KeyName="k")
    slow.stop()  # joins the held call: on a busy machine the client can time out before EC2 has acted
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["k"]


def outcomes_for_seed(proxy, seed: int) -> list[bool]:
    faulty = proxy(seed=seed, fault_rate=0.5, fault_kinds=("InternalError",))
    client = client_for(faulty)
    failed = []
    for _ in range(12):
        try:
            client.describe_key_pairs()
            failed.append(False)
        except ClientError:
            failed.append(True)
    return failed


def test_faults_are_repeatable_for_a_seed(proxy):
    first = outcomes_for_seed(proxy, seed=7)
    assert outcomes_for_seed(proxy, seed=7) == first
    assert outcomes_for_seed(proxy, seed=8) != first
    assert 0 < sum(first) < len(first)


def test_faults_hit_only_the_chosen_actions(proxy, ec2):
    faulty = proxy(fault_rate=1.0, fault_kinds=("InternalError",), fault_actions=frozenset({"AllocateAddress"}))
    client = client_for(faulty)
    client.create_key_pair(KeyName="k")
    assert error_of(lambda: client.allocate_address(Domain="vpc")).response["Error"]["Code"] == "InternalError"


def test_a_repeated_client_token_returns_the_first_instance_without_a_second(proxy, ec2):
    deduplicating = proxy(client_token_dedup=True)
    client = client_for(deduplicating)
    first = run_one(client, ClientToken="token-1")
    assert run_one(client, ClientToken="token-1") == first
    instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert [i["InstanceId"] for i in instances] == [first]
    assert deduplicating.outcomes()["deduplicated"] == 1


def test_without_deduplication_the_emulator_makes_a_second_instance(proxy, ec2):
    client = client_for(proxy())
    assert run_one(client, ClientToken="token-1") != run_one(client, ClientToken="token-1")


def test_a_client_token_reused_with_other_parameters_is_refused(proxy):
    client = client_for(proxy(client_token_dedup=True))
    run_one(client, ClientToken="token-1")
    error = error_of(lambda: run_one(client, ClientToken="token-1", InstanceType="t2.small"))
    assert error.response["Error"]["Code"] == "IdempotentParameterMismatch"


def shows_then_settles(client, instance_id: str, transitional: tuple[str, int], settled: tuple[str, int]) -> None:
    """Latency mode (2 s, so that a loaded machine still asks within it): the instance
    shows ``transitional`` at once, and ``settled`` once the latency passed."""
    assert state_of(client, instance_id) == transitional
    time.sleep(2.1)
    assert state_of(client, instance_id) == settled


def test_latency_mode_shows_pending_then_running(proxy):
    client = client_for(proxy(latency=2))
    instance_id = run_one(client)
    shows_then_settles(client, instance_id, ("pending", 0), ("running", 16))


def test_latency_mode_shows_stopping_then_stopped(proxy):
    client = client_for(proxy(latency=2))
    instance_id = run_one(client)
    time.sleep(2.1)
    answer = client.stop_instances(InstanceIds=[instance_id])["StoppingInstances"][0]["CurrentState"]
    assert (answer["Name"], answer["Code"]) == ("stopping", 64)
    shows_then_settles(client, instance_id, ("stopping", 64), ("stopped", 80))


def test_latency_mode_shows_shutting_down_then_terminated(proxy):
    client = client_for(proxy(latency=2))
    instance_id = run_one(client)
    answer = client.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"][0]["CurrentState"]
    assert (answer["Name"], answer["Code"]) == ("shutting-down", 32)
    shows_then_settles(client, instance_id, ("shutting-down", 32), ("terminated", 48))


def test_a_drained_token_bucket_answers_request_limit_exceeded(proxy):
    throttling = proxy(token_bucket=True, limits={"non-mutating": (3, 0.01)})
    client = client_for(throttling)
    codes = []
    for _ in range(5):
        try:
            client.describe_key_pairs()
            codes.append("ok")
        except ClientError as error:
            codes.append(error.response["Error"]["Code"])
    assert codes == ["ok", "ok", "ok", "RequestLimitExceeded", "RequestLimitExceeded"]
    assert throttling.throttled == {"DescribeKeyPairs": 2}


def test_a_token_bucket_refills_at_its_rate(proxy):
    client = client_for(proxy(token_bucket=True, limits={"DescribeKeyPairs": (1, 0.5)}))
    client.describe_key_pairs()
    assert error_of(client.describe_key_pairs).response["Error"]["Code"] == "RequestLimitExceeded"
    time.sleep(2.1)
    client.describe_key_pairs()


def test_each_action_has_its_own_bucket(proxy):
    client = client_for(proxy(token_bucket=True, limits={"non-mutating": (1, 0.01)}))
    client.describe_key_pairs()
    client.describe_addresses()


@pytest.mark.parametrize(
    ("action", "params", "klass"),
    [
        ("DescribeKeyPairs", {}, "non-mutating"),
        ("DescribeInstances", {}, "unfiltered non-mutating"),
        ("DescribeInstances", {"Filter.1.Name": "tag:x"}, "non-mutating"),
        ("DescribeSecurityGroups", {"MaxResults": "5"}, "non-mutating"),
        ("CreateKeyPair", {}, "resource-intensive"),
        ("AuthorizeSecurityGroupIngress", {}, "resource-intensive"),
        ("AllocateAddress", {}, "mutating"),
    ],
)
def test_actions_fall_in_ec2s_documented_throttling_classes(action, params, klass):
    assert action_class(action, params) == klass


def test_a_refusal_answers_dry_runs_only_when_asked(proxy):
    refusing = proxy(refusals=(Refusal("RunInstances", dry_run_only=True),))
    client = client_for(refusing)
    error = error_of(lambda: run_one(client, DryRun=True))
    assert (error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]) == (
        "UnauthorizedOperation",
        403,
    )
    run_one(client)
    assert refusing.outcomes() == {"refused": 1, "forwarded": 1}


def test_a_refusal_can_answer_every_call_of_an_action(proxy):
    client = client_for(proxy(refusals=(Refusal("AllocateAddress", code="AddressLimitExceeded", status=400),)))
    assert error_of(lambda: client.allocate_address(Domain="vpc")).response["Error"]["Code"] == "AddressLimitExceeded"


def test_stop_closes_kept_connections_and_joins_its_threads(moto_server):
    before = threading.active_count()
    stopped = Ec2Proxy(moto_server.url).start()
    client = client_for(stopped)
    client.describe_key_pairs()  # leaves a kept-alive connection open
    stopped.stop()
    assert threading.active_count() == before
    with pytest.raises(EndpointConnectionError):
        client.describe_key_pairs()


def test_a_deduplicated_run_does_not_restart_the_pending_time(proxy):
    client = client_for(proxy(latency=0.5, client_token_dedup=True))
    instance_id = run_one(client, ClientToken="token-1")
    time.sleep(0.6)
    run_one(client, ClientToken="token-1")
    assert state_of(client, instance_id) == ("running", 16)


# --- eventual consistency ---------------------------------------------------------------


def test_a_request_naming_a_group_made_less_than_the_window_ago_answers_its_not_found(proxy):
    client = client_for(proxy(consistency_window=30))
    group_id = client.create_security_group(GroupName="lagging", Description="x")["GroupId"]
    error = error_of(lambda: client.describe_security_groups(GroupIds=[group_id]))
    assert error.response["Error"]["Code"] == "InvalidGroup.NotFound"


def test_a_dry_run_naming_a_key_pair_made_a_moment_ago_answers_its_not_found(proxy):
    client = client_for(proxy(consistency_window=30))
    client.create_key_pair(KeyName="lagging")
    error = error_of(lambda: run_one(client, KeyName="lagging", DryRun=True))
    assert error.response["Error"]["Code"] == "InvalidKeyPair.NotFound"


def test_a_listing_by_filter_sees_a_new_resource_at_once(proxy):
    client = client_for(proxy(consistency_window=30))
    client.create_key_pair(KeyName="listed")
    found = client.describe_key_pairs(Filters=[{"Name": "key-name", "Values": ["listed"]}])["KeyPairs"]
    assert [key["KeyName"] for key in found] == ["listed"]


def test_with_listing_lag_a_listing_by_filter_leaves_out_what_was_made_less_than_the_window_ago(proxy):
    client = client_for(proxy(consistency_window=30, listing_lag=True))
    tags = [{"ResourceType": "instance", "Tags": [{"Key": "owner", "Value": "me"}]}]
    instance_id = run_one(client, TagSpecifications=tags)
    by_tag = [{"Name": "tag:owner", "Values": ["me"]}]
    assert client.describe_instances(Filters=by_tag)["Reservations"] == []  # not even an empty reservation
    by_id_filter = [{"Name": "instance-id", "Values": [instance_id]}]
    assert client.describe_instances(Filters=by_id_filter)["Reservations"] == []
    client.create_security_group(GroupName="fresh", Description="x")
    by_name = [{"Name": "group-name", "Values": ["fresh"]}]
    assert client.describe_security_groups(Filters=by_name)["SecurityGroups"] == []


def test_with_listing_lag_a_listing_by_tag_shows_what_was_made_before_the_window(proxy):
    client = client_for(proxy(consistency_window=2, listing_lag=True))
    tags = [{"ResourceType": "elastic-ip", "Tags": [{"Key": "owner", "Value": "me"}]}]
    first = client.allocate_address(Domain="vpc", TagSpecifications=tags)["AllocationId"]
    time.sleep(2.1)
    second = client.allocate_address(Domain="vpc", TagSpecifications=tags)["AllocationId"]
    listed = client.describe_addresses(Filters=[{"Name": "tag:owner", "Values": ["me"]}])["Addresses"]
    assert [address["AllocationId"] for address in listed] == [first]
    assert second != first


def test_a_delete_of_a_key_pair_made_a_moment_ago_succeeds_without_deleting_it_as_ec2_does(proxy):
    client = client_for(proxy(consistency_window=30))
    client.create_key_pair(KeyName="lagging")
    answer = client.delete_key_pair(KeyName="lagging")
    assert answer["Return"] is True and "KeyPairId" not in answer
    assert client.describe_key_pairs(Filters=[{"Name": "key-name", "Values": ["lagging"]}])["KeyPairs"]


def test_a_resource_is_known_once_the_window_has_passed(proxy):
    client = client_for(proxy(consistency_window=0.3))
    allocation_id = client.allocate_address(Domain="vpc")["AllocationId"]
    time.sleep(0.4)
    assert client.describe_addresses(AllocationIds=[allocation_id])["Addresses"]


def test_a_group_cannot_be_deleted_for_the_window_after_a_terminate(proxy):
    lagging = proxy(consistency_window=2)
    client = client_for(lagging)
    group_id = client.create_security_group(GroupName="in-use", Description="x")["GroupId"]
    instance_id = run_one(client)
    time.sleep(2.1)
    client.terminate_instances(InstanceIds=[instance_id])
    error = error_of(lambda: client.delete_security_group(GroupId=group_id))
    assert error.response["Error"]["Code"] == "DependencyViolation"
    time.sleep(2.1)
    client.delete_security_group(GroupId=group_id)
    assert [call.outcome for call in lagging.seen() if call.action == "DeleteSecurityGroup"] == [
        "not caught up",
        "forwarded",
    ]


def account_attribute(client, name: str) -> list[str]:
    attributes = client.describe_account_attributes(AttributeNames=[name])["AccountAttributes"]
    return [value["AttributeValue"] for a in attributes if a["AttributeName"] == name for value in a["AttributeValues"]]


def test_the_elastic_ip_limit_refuses_an_allocation_past_it(proxy):
    limited = proxy(elastic_ip_limit=2)
    client = client_for(limited)
    for _ in range(2):
        client.allocate_address(Domain="vpc")
    error = error_of(lambda: client.allocate_address(Domain="vpc"))
    assert error.response["Error"]["Code"] == "AddressLimitExceeded"
    assert len(client.describe_addresses()["Addresses"]) == 2


def test_a_released_address_makes_room_under_the_elastic_ip_limit(proxy):
    limited = proxy(elastic_ip_limit=1)
    client = client_for(limited)
    first = client.allocate_address(Domain="vpc")["AllocationId"]
    client.release_address(AllocationId=first)
    assert client.allocate_address(Domain="vpc")["AllocationId"] != first


def test_the_account_attributes_answer_the_elastic_ip_limit(proxy):
    limited = proxy(elastic_ip_limit=3)
    assert account_attribute(client_for(limited), "vpc-max-elastic-ips") == ["3"]
