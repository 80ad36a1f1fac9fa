"""EC2 as it really is: eventually consistent. Through the proxy's
eventual-consistency mode, a request that names a resource made less than W
seconds ago is answered with its NotFound code, and DeleteSecurityGroup with
DependencyViolation for W seconds after a terminate. Install and uninstall
must still make exactly one of each resource and leave nothing."""

from __future__ import annotations

import pytest
from cloudify.exceptions import WorkflowFailed

from ec2 import aws, connection, utils
from tests.support import HttpAnswer, came_within, live_instances, reference_topology
from tests.test_exactly_once import NOTHING, ONE_OF_EACH, inventory, reference
from tools.ec2proxy import Ec2Proxy, ProxyConfig, Refusal

# Most tests here wait out seconds of simulated lag: started first under xdist (conftest).
pytestmark = pytest.mark.waits

WINDOWS = (1, 3, 10)
SEEDS = (1, 2, 3)


def install_and_uninstall(proxy: Ec2Proxy, deploy, tmp_path, ec2, task_retries: int = 20):
    deployment = reference(deploy, tmp_path, {"endpoint_url": proxy.url})
    deployment.install(task_retries=task_retries)
    assert inventory(ec2) == ONE_OF_EACH
    deployment.uninstall(task_retries=task_retries)
    assert inventory(ec2) == NOTHING
    return deployment


@pytest.mark.parametrize("window", WINDOWS)
def test_the_reference_topology_installs_and_uninstalls_without_a_workflow_retry_while_ec2_lags(
    moto_server, deploy, tmp_path, ec2, window
):
    with Ec2Proxy(moto_server.url, ProxyConfig(consistency_window=window)) as proxy:
        deployment = install_and_uninstall(proxy, deploy, tmp_path, ec2, task_retries=0)
        calls = proxy.seen()
    # EC2 did lag: each of these was refused, where it came within the window.
    lagged = {call.action for call in calls if call.outcome == "not caught up"}
    for cause, effect in LAGGING_STEPS:
        assert effect in lagged or not came_within(calls, cause, effect, window), effect
    assert deployment.tally.events["rescheduled"] == 0


# A call, and the next one that EC2 refuses for a moment after it.
LAGGING_STEPS = (
    ("CreateSecurityGroup", "AuthorizeSecurityGroupIngress"),
    ("RunInstances", "DescribeInstances"),
    ("TerminateInstances", "DeleteSecurityGroup"),
)


def test_an_instance_whose_key_pair_and_rule_less_group_were_made_a_moment_ago_is_validated_and_launched(
    moto_server, deploy, tmp_path, ec2
):
    # No rules to authorise: nothing stands between the creates and the
    # instance's dry run and launch, which name the new key pair and group.
    with Ec2Proxy(moto_server.url, ProxyConfig(consistency_window=3)) as proxy:
        nodes = reference_topology({"endpoint_url": proxy.url}, tmp_path / "key.pem")
        nodes["security_group"]["properties"]["rules"] = []
        deployment = deploy(nodes)
        deployment.install(task_retries=0)
        calls = proxy.seen()
        lagged = [(call.action, call.dry_run) for call in calls if call.outcome == "not caught up"]
        dry_run_in_window = came_within(calls, "CreateSecurityGroup", "RunInstances", 3, dry_run=True)
        assert ("RunInstances", True) in lagged or not dry_run_in_window
        assert len(live_instances(ec2)) == 1
        deployment.uninstall(task_retries=0)
    assert inventory(ec2) == NOTHING


KEY_PAIR_LOOKUP = "EC2 answered InvalidKeyPair.NotFound to DescribeKeyPairs"
GROUP_LISTING = "a listing of security groups by name does not show it yet"


def install_naming_what_was_made_a_moment_ago(moto_server, deploy, tmp_path, ec2, capsys, name_it, waited) -> None:
    """The reference topology, with ``name_it(nodes)`` naming a key pair or group of
    another node by its name, through EC2 that lags in lookups and listings: the
    lookup logs that it ``waited``, install succeeds, and uninstall leaves nothing."""
    with Ec2Proxy(moto_server.url, ProxyConfig(consistency_window=3, listing_lag=True)) as proxy:
        nodes = reference_topology({"endpoint_url": proxy.url}, tmp_path / "key.pem")
        nodes["security_group"]["properties"]["rules"] = []  # nothing between the creates and the lookups
        name_it(nodes)
        deployment = deploy(nodes)
        deployment.install(task_retries=0)
        assert len(live_instances(ec2)) == 1
        assert waited in capsys.readouterr().out
        deployment.uninstall(task_retries=0)
    assert inventory(ec2) == NOTHING


def test_an_instance_naming_its_key_pair_in_parameters_made_a_moment_ago_is_validated_and_launched(
    moto_server, deploy, tmp_path, ec2, capsys
):
    def name_it(nodes):
        nodes["keypair"]["properties"]["resource_id"] = "app-key"
        nodes["vm"]["properties"]["parameters"] = {"key_name": "app-key"}

    install_naming_what_was_made_a_moment_ago(moto_server, deploy, tmp_path, ec2, capsys, name_it, KEY_PAIR_LOOKUP)


def name_the_group_in_parameters(nodes: dict) -> None:
    """The instance names the group in parameters.security_groups, ordered after it by depends_on only."""
    nodes["security_group"]["properties"]["resource_id"] = "app-group"
    nodes["vm"]["properties"]["parameters"] = {"security_groups": ["app-group"]}
    nodes["vm"]["relationships"] = [
        *(r for r in nodes["vm"]["relationships"] if r["target"] != "security_group"),
        {"type": "cloudify.relationships.depends_on", "target": "security_group"},
    ]


def test_an_instance_naming_a_security_group_made_a_moment_ago_in_parameters_is_validated_and_launched(
    moto_server, deploy, tmp_path, ec2, capsys
):
    install_naming_what_was_made_a_moment_ago(
        moto_server, deploy, tmp_path, ec2, capsys, name_the_group_in_parameters, GROUP_LISTING
    )


def test_without_validation_create_looks_a_security_group_named_in_parameters_up_again_while_it_is_fresh(
    moto_server, deploy, tmp_path, ec2, capsys
):
    def name_it(nodes):
        name_the_group_in_parameters(nodes)
        nodes["vm"]["interfaces"] = {"cloudify.interfaces.validation": {"create": {}}}  # create meets the lag

    install_naming_what_was_made_a_moment_ago(moto_server, deploy, tmp_path, ec2, capsys, name_it, GROUP_LISTING)


def test_a_rule_naming_a_source_group_made_a_moment_ago_is_validated_and_authorised(
    moto_server, deploy, tmp_path, ec2, capsys
):
    def name_it(nodes):
        nodes["security_group"]["properties"]["resource_id"] = "app-group"
        aws_config = nodes["security_group"]["properties"]["aws_config"]
        rule = {"ip_protocol": "tcp", "from_port": 80, "to_port": 80, "src_group_id": "app-group"}
        nodes["web"] = {
            "type": "cloudify.aws.nodes.SecurityGroup",
            "properties": {"description": "web", "rules": [rule], "aws_config": aws_config},
            "relationships": [{"type": "cloudify.relationships.depends_on", "target": "security_group"}],
        }

    install_naming_what_was_made_a_moment_ago(moto_server, deploy, tmp_path, ec2, capsys, name_it, GROUP_LISTING)


def test_a_key_name_that_names_no_key_pair_fails_validation_once_the_fresh_targets_window_has_passed(
    moto_server, deploy, tmp_path, ec2
):
    # The name is wrong, not lagging: EC2 lags 1 s here, and the plugin allows 5 s
    # (so that a loaded machine, slow to reach the lookup, still sees it asked again).
    with Ec2Proxy(moto_server.url, ProxyConfig(consistency_window=1, listing_lag=True)) as proxy:
        aws_config = {"endpoint_url": proxy.url, "propagation_timeout": 5}
        nodes = reference_topology(aws_config, tmp_path / "key.pem")
        vm = nodes["vm"]
        vm["properties"]["parameters"] = {"key_name": "no-such-key"}
        vm["relationships"] = [{"type": "cloudify.relationships.depends_on", "target": "keypair"}]
        deployment = deploy({"keypair": nodes["keypair"], "vm": vm})
        with pytest.raises(WorkflowFailed):
            deployment.install(task_retries=0)
        assert "property 'parameters.key_name' names key pair 'no-such-key'" in "\n".join(deployment.tally.last)
        lookups = [call for call in proxy.seen() if call.action == "DescribeKeyPairs"]
        assert len(lookups) > 1 and lookups[-1].started - lookups[0].started >= 1
        deployment.uninstall(task_retries=0)
    assert inventory(ec2) == NOTHING


def test_a_key_name_that_names_no_key_pair_fails_validation_at_once_when_no_target_is_fresh(
    moto_server, deploy, tmp_path, ec2
):
    with Ec2Proxy(moto_server.url, ProxyConfig(consistency_window=3, listing_lag=True)) as proxy:
        nodes = reference_topology({"endpoint_url": proxy.url}, tmp_path / "key.pem")
        vm = nodes["vm"]
        vm["properties"]["parameters"] = {"key_name": "no-such-key"}
        vm["relationships"] = []
        deployment = deploy({"vm": vm})
        with pytest.raises(WorkflowFailed):
            deployment.install(task_retries=0)
        assert "property 'parameters.key_name' names key pair 'no-such-key'" in "\n".join(deployment.tally.last)
        assert [call.action for call in proxy.seen()].count("DescribeKeyPairs") == 1
    assert inventory(ec2) == NOTHING


# Each kind of fault: the ProxyConfig setting, and the outcome it leaves in the proxy's records.
FAULTS = {"request faults": ("fault_rate", "fault"), "lost answers": ("lost_rate", "lost")}


@pytest.mark.parametrize("window", (1, 3))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fault", FAULTS)
def test_lagging_ec2_with_twenty_percent_faults_still_makes_one_of_each_and_leaves_nothing(
    moto_server, deploy, tmp_path, ec2, window, seed, fault
):
    setting, outcome = FAULTS[fault]
    config = ProxyConfig(
        seed=seed, client_token_dedup=True, consistency_window=window, listing_lag=True, **{setting: 0.2}
    )
    with Ec2Proxy(moto_server.url, config) as proxy:
        install_and_uninstall(proxy, deploy, tmp_path, ec2)
        assert sum(n for seen, n in proxy.outcomes().items() if seen.startswith(outcome)) > 0


@pytest.mark.parametrize("fault", ("fault_rate", "lost_rate"))
def test_a_ten_second_lag_with_faults_still_makes_one_of_each_and_leaves_nothing(
    moto_server, deploy, tmp_path, ec2, fault
):
    config = ProxyConfig(seed=1, client_token_dedup=True, consistency_window=10, listing_lag=True, **{fault: 0.2})
    with Ec2Proxy(moto_server.url, config) as proxy:
        install_and_uninstall(proxy, deploy, tmp_path, ec2)


def test_an_uninstall_right_after_a_failed_install_leaves_nothing(moto_server, deploy, tmp_path, ec2):
    # The group is refused: install fails within a moment, while the key pair
    # and the address made beside it are still unknown to EC2.
    refused = Refusal("CreateSecurityGroup", real_only=True)
    with Ec2Proxy(moto_server.url, ProxyConfig(consistency_window=3, refusals=(refused,))) as proxy:
        deployment = reference(deploy, tmp_path, {"endpoint_url": proxy.url})
        with pytest.raises(WorkflowFailed):
            deployment.install(task_retries=0)
        made = {call.action for call in proxy.seen() if call.outcome == "forwarded"}
        assert {"CreateKeyPair", "AllocateAddress"} <= made
        deployment.uninstall(task_retries=0)
        calls = proxy.seen()
    lagged = {call.action for call in calls if call.outcome == "not caught up"}
    for cause, effect in (("CreateKeyPair", "DeleteKeyPair"), ("AllocateAddress", "ReleaseAddress")):
        assert effect in lagged or not came_within(calls, cause, effect, 3), effect
    assert inventory(ec2) == NOTHING


def test_every_node_instance_records_when_its_resource_was_created(moto_server, deploy, tmp_path):
    deployment = reference(deploy, tmp_path, {"endpoint_url": moto_server.url})
    deployment.install()
    for node in ("keypair", "security_group", "vm", "elastic_ip"):
        assert utils.fresh_for(deployment.runtime(node), 120) > 60
    assert utils.fresh_for(deployment.runtime("elastic_ip"), 120, "associated_at") > 60
    deployment.uninstall()
    for node in ("keypair", "security_group", "vm", "elastic_ip"):
        assert "created_at" not in deployment.runtime(node)


def test_a_not_found_with_no_record_of_a_create_is_believed_at_once(moto_server):
    with Ec2Proxy(moto_server.url) as proxy:
        client = connection.ec2_client({"endpoint_url": proxy.url})
        assert aws.delete_security_group(client, "sg-0123456789abcdef0", fresh_for=0) is False
        assert proxy.counts()["DeleteSecurityGroup"] == 1


# --- the pause between tries ---------------------------------------------------------


def not_found_until(tries: int, code: str = "InvalidGroup.NotFound"):
    """A call that fails with ``code`` for its first ``tries`` calls; the calls are counted."""
    made: list[int] = []

    def call():
        made.append(1)
        if len(made) <= tries:
            raise aws.missing(code, "AuthorizeSecurityGroupIngress", "group")
        return "done"

    return call, made


def test_a_not_found_within_the_window_is_asked_again_after_pauses_of_a_second_that_then_grow(monkeypatch):
    pauses: list[float] = []
    monkeypatch.setattr(aws.time, "sleep", pauses.append)
    call, made = not_found_until(8)
    assert aws.while_propagating(call, aws.within(aws.GROUP_NOT_FOUND, 120)) == "done"
    assert len(made) == 9
    assert pauses[:5] == [1.0, 1.0, 1.0, 1.5, 2.25]
    assert max(pauses) == aws.PROPAGATION_LONGEST_PAUSE


def test_a_not_found_past_the_window_propagates(monkeypatch):
    monkeypatch.setattr(aws.time, "sleep", lambda _seconds: None)
    call, made = not_found_until(1_000)
    with pytest.raises(aws.ClientError, match="InvalidGroup.NotFound"):
        aws.while_propagating(call, aws.within(aws.GROUP_NOT_FOUND, 0))
    assert len(made) == 1


def test_a_code_outside_the_windows_propagates_at_once(monkeypatch):
    monkeypatch.setattr(aws.time, "sleep", lambda _seconds: pytest.fail("no pause for another code"))
    call, made = not_found_until(1, code="UnauthorizedOperation")
    with pytest.raises(aws.ClientError, match="UnauthorizedOperation"):
        aws.while_propagating(call, aws.within(aws.GROUP_NOT_FOUND, 120))
    assert len(made) == 1


def resent_not_found(first_attempt: dict):
    """A delete whose first try's first attempt ended as ``first_attempt`` says
    (botocore's needs-retry arguments) and whose resend answered NotFound; its
    second try succeeds. The tries are counted."""
    made: list[int] = []

    def call():
        made.append(1)
        if len(made) == 1:
            aws.note_attempt(**first_attempt)
            raise aws.missing("InvalidGroup.NotFound", "DeleteSecurityGroup", "group")
        return "deleted"

    return call, made


def test_a_resent_delete_answering_not_found_after_a_lost_answer_is_believed_when_no_listing_shows_it(monkeypatch):
    monkeypatch.setattr(aws.time, "sleep", lambda _seconds: pytest.fail("believed at once: no pause"))
    call, made = resent_not_found({"caught_exception": ConnectionError("reset")})
    with pytest.raises(aws.ClientError, match="NotFound"):
        aws.while_propagating(call, aws.within(aws.GROUP_NOT_FOUND, 120), listed=lambda: False)
    assert len(made) == 1


def test_a_resent_delete_answering_not_found_after_a_lost_answer_is_asked_again_while_a_listing_shows_it(monkeypatch):
    monkeypatch.setattr(aws.time, "sleep", lambda _seconds: None)
    call, made = resent_not_found({"response": (HttpAnswer(500), {})})
    assert aws.while_propagating(call, aws.within(aws.GROUP_NOT_FOUND, 120), listed=lambda: True) == "deleted"
    assert len(made) == 2


def test_a_resent_delete_answering_not_found_after_a_throttled_attempt_is_asked_again(monkeypatch):
    # Throttled: EC2 refused the first attempt and did nothing, so the NotFound is only lag.
    monkeypatch.setattr(aws.time, "sleep", lambda _seconds: None)
    call, made = resent_not_found({"response": (HttpAnswer(400), {})})
    assert aws.while_propagating(call, aws.within(aws.GROUP_NOT_FOUND, 120), listed=lambda: False) == "deleted"
    assert len(made) == 2


def test_a_resent_delete_answering_not_found_after_a_503_request_limit_exceeded_is_asked_again(monkeypatch):
    # EC2 throttles with 503 RequestLimitExceeded: a refusal like the 400 one, not a lost answer.
    monkeypatch.setattr(aws.time, "sleep", lambda _seconds: None)
    call, made = resent_not_found({"response": (HttpAnswer(503), {"Error": {"Code": "RequestLimitExceeded"}})})
    assert aws.while_propagating(call, aws.within(aws.GROUP_NOT_FOUND, 120), listed=lambda: False) == "deleted"
    assert len(made) == 2


# --- the record ---------------------------------------------------------------------------


def test_a_rerun_of_create_records_its_own_time(make_ctx):
    ctx = make_ctx({}, runtime_properties={"create_started": True, "created_at": "2020-01-01T00:00:00.000+00:00"})
    utils.mark_create_started(ctx.instance)
    assert utils.fresh_for(ctx.instance.runtime_properties, 120) > 119


def test_a_resource_made_now_is_fresh_for_the_whole_window():
    assert 119 < utils.fresh_for({"created_at": utils.now()}, 120) <= 120


def test_a_resource_with_no_record_or_an_unreadable_one_is_not_fresh():
    assert utils.fresh_for({}, 120) == 0
    assert utils.fresh_for({"created_at": "yesterday"}, 120) == 0


def test_a_resource_made_longer_ago_than_the_window_is_not_fresh():
    assert utils.fresh_for({"created_at": "2020-01-01T00:00:00.000+00:00"}, 120) == 0


def test_a_window_of_zero_turns_the_waiting_off():
    assert utils.fresh_for({"created_at": utils.now()}, 0) == 0
