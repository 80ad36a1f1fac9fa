"""Exactly-once creates and clean uninstalls under faults, lost answers and
crashes, on the reference topology, through the fault proxy in front of the
emulator (which, unlike moto, honours RunInstances ClientTokens as EC2 does)."""

from __future__ import annotations

import pytest
from cloudify.exceptions import NonRecoverableError, WorkflowFailed

from ec2 import connection, keypair
from tests.support import die_once_after, live_instances, reference_topology, sdk_debug_logs
from tools.ec2proxy import Ec2Proxy, ProxyConfig

SEEDS = (1, 2, 3, 4, 5)
MUTATING_CREATE_CALLS = (
    "CreateKeyPair",
    "CreateSecurityGroup",
    "AuthorizeSecurityGroupIngress",
    "RunInstances",
    "AllocateAddress",
    "AssociateAddress",
)


def inventory(ec2) -> dict[str, int]:
    """How many of each resource EC2 holds (default groups and terminated instances aside)."""
    groups = [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]
    return {
        "key pairs": len(ec2.describe_key_pairs()["KeyPairs"]),
        "security groups": len(groups),
        "instances": len(live_instances(ec2)),
        "addresses": len(ec2.describe_addresses()["Addresses"]),
    }


ONE_OF_EACH = {"key pairs": 1, "security groups": 1, "instances": 1, "addresses": 1}
NOTHING = dict.fromkeys(ONE_OF_EACH, 0)


def reference(deploy, tmp_path, aws_config: dict):
    return deploy(reference_topology(aws_config, tmp_path / "keys" / "key.pem"))


def install_and_uninstall_through(proxy: Ec2Proxy, deploy, tmp_path, ec2) -> None:
    """The reference topology, through ``proxy`` with 20 task retries: install
    makes exactly one of each, and uninstall leaves nothing."""
    deployment = reference(deploy, tmp_path, {"endpoint_url": proxy.url})
    deployment.install(task_retries=20)
    assert inventory(ec2) == ONE_OF_EACH
    deployment.uninstall(task_retries=20)
    assert inventory(ec2) == NOTHING


@pytest.mark.parametrize("seed", SEEDS)
def test_twenty_percent_request_faults_still_make_exactly_one_of_each_and_leave_nothing(
    moto_server, deploy, tmp_path, ec2, seed
):
    with Ec2Proxy(moto_server.url, ProxyConfig(seed=seed, fault_rate=0.2, client_token_dedup=True)) as proxy:
        install_and_uninstall_through(proxy, deploy, tmp_path, ec2)
        assert proxy.outcomes()["fault"] > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_twenty_percent_lost_answers_still_make_exactly_one_of_each_and_leave_nothing(
    moto_server, deploy, tmp_path, ec2, seed
):
    config = ProxyConfig(seed=seed, lost_rate=0.2, client_token_dedup=True)
    with Ec2Proxy(moto_server.url, config) as proxy:
        install_and_uninstall_through(proxy, deploy, tmp_path, ec2)
        assert sum(n for outcome, n in proxy.outcomes().items() if outcome.startswith("lost")) > 0


@pytest.mark.parametrize("operation", MUTATING_CREATE_CALLS)
def test_a_crash_right_after_each_create_call_then_a_rerun_leaves_exactly_one_of_each(
    deploy, tmp_path, ec2, monkeypatch, operation
):
    deployment = reference(deploy, tmp_path, {})
    crashed = die_once_after(monkeypatch, operation)
    with pytest.raises(WorkflowFailed):
        deployment.install()
    assert crashed
    deployment.install(task_retries=3)
    assert inventory(ec2) == ONE_OF_EACH
    deployment.uninstall()
    assert inventory(ec2) == NOTHING


def test_uninstall_twice_succeeds(deploy, tmp_path, ec2):
    deployment = reference(deploy, tmp_path, {})
    deployment.install()
    deployment.uninstall()
    deployment.uninstall()
    assert inventory(ec2) == NOTHING


# --- key pairs of two deployments --------------------------------------------------


def test_two_deployments_whose_key_files_share_a_base_name_never_delete_each_others_key(make_ctx, tmp_path, ec2):
    first = make_ctx({"private_key_path": str(tmp_path / "a" / "key.pem")}, deployment_id="one", instance_id="key_1")
    keypair.create(ctx=first)
    # The second deployment validated before the first created its key (a race),
    # so its create meets the first's key: it is refused, and its delete keeps it.
    second = make_ctx({"private_key_path": str(tmp_path / "b" / "key.pem")}, deployment_id="two", instance_id="key_1")
    with pytest.raises(NonRecoverableError, match="InvalidKeyPair.Duplicate"):
        keypair.create(ctx=second)
    keypair.delete(ctx=second)
    assert [key["KeyName"] for key in ec2.describe_key_pairs()["KeyPairs"]] == ["key"]
    assert (tmp_path / "a" / "key.pem").exists()


# --- secrets ---------------------------------------------------------------------------

ACCESS_KEY = "AKIADISTINCTIVE4242"
SECRET_KEY = "distinctive/Secret+Key/0123456789abcdefghij"
SESSION_TOKEN = "FwoGZXIvYXdzEDistinctiveSessionToken0123456789"


def test_install_and_uninstall_with_debug_logging_leave_no_secret_in_logs_or_runtime_properties(
    moto_server, deploy, tmp_path, ec2, caplog
):
    aws_config = {
        "endpoint_url": moto_server.url,
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "aws_session_token": SESSION_TOKEN,
    }
    connection.clear_cache()
    with sdk_debug_logs(caplog):
        deployment = reference(deploy, tmp_path, aws_config)
        deployment.install()
        private_key = (tmp_path / "keys" / "key.pem").read_text()
        runtime = {node: deployment.runtime(node) for node in ("keypair", "security_group", "vm", "elastic_ip")}
        deployment.uninstall()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "CreateKeyPair" in logged or "create_key_pair" in logged.lower()  # botocore's DEBUG lines were captured
    key_body = "".join(private_key.strip().splitlines()[1:-1])
    for secret in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, key_body[:40], "PRIVATE KEY-----"):
        assert secret not in logged
        assert secret not in repr(runtime)
