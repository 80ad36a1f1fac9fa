"""RunInstances spent once per instance (issue 17, point 2): validation.create's
dry run of a node's RunInstances request is made once per node and request
shape in a process, not once per node instance; a refused one is asked again;
a passed one is trusted for a few minutes only. Where each operation runs in
its own process (a manager), ``launch_dry_run: false`` leaves it out."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from cloudify.exceptions import WorkflowFailed

from ec2 import aws, connection, instance_request
from tests import test_manager_mode
from tests.support import IMAGE_ID, NO_AGENT, live_instances
from tools import topology
from tools.ec2proxy import Ec2Proxy, ProxyConfig, Refusal

N = 5
REFUSE_LAUNCH_DRY_RUNS = ProxyConfig(refusals=(Refusal("RunInstances", dry_run_only=True),))


def fleet(proxy: Ec2Proxy, tmp_path, count: int = N, **properties) -> dict:
    """tools.topology's fleet (the bench's): ``count`` instances sharing a key pair and a group."""
    nodes = topology.fleet({"endpoint_url": proxy.url}, count)
    nodes["keypair"]["properties"]["private_key_path"] = str(tmp_path / "key.pem")
    nodes["vm"]["properties"].update(wait_interval=0, **properties)
    return nodes


def run_instances(proxy: Ec2Proxy) -> tuple[int, int]:
    """(launches, dry runs) of RunInstances the proxy saw."""
    return proxy.counts()["RunInstances"], Counter(proxy.dry_runs)["RunInstances"]


@pytest.fixture
def later(monkeypatch):
    """Moves ``time.monotonic()`` on by some seconds, as if that much time had passed."""
    real = time.monotonic
    shift = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: real() + shift[0])

    def wait(seconds: float) -> None:
        shift[0] += seconds

    return wait


# --- the local engine: one process for every operation -----------------------------


def test_n_instances_of_one_node_install_with_n_launches_one_dry_run_and_one_image_lookup(
    moto_server, deploy, tmp_path, ec2
):
    with Ec2Proxy(moto_server.url) as proxy:
        deploy(fleet(proxy, tmp_path)).install(task_retries=5)
    assert run_instances(proxy) == (N, 1)
    assert proxy.counts()["DescribeImages"] == 1
    assert len(live_instances(ec2)) == N


def test_a_refused_dry_run_is_not_kept_the_fixed_request_is_dry_run_again(moto_server, deploy, tmp_path, ec2):
    with Ec2Proxy(moto_server.url, REFUSE_LAUNCH_DRY_RUNS) as proxy:
        deployment = deploy(fleet(proxy, tmp_path, count=3))
        with pytest.raises(WorkflowFailed):
            deployment.install(task_retries=0)
        assert run_instances(proxy)[0] == 0 and live_instances(ec2) == []
        proxy.config = ProxyConfig()  # the permission is granted
        proxy.reset()
        deployment.install(task_retries=5)
    assert run_instances(proxy) == (3, 1)


def test_launch_dry_run_false_leaves_the_dry_run_out_of_install(moto_server, deploy, tmp_path, ec2):
    with Ec2Proxy(moto_server.url) as proxy:
        deploy(fleet(proxy, tmp_path, count=3, launch_dry_run=False)).install(task_retries=5)
    assert run_instances(proxy) == (3, 0)
    assert proxy.counts()["DescribeImages"] == 1  # the image check stays


def test_launch_dry_run_false_still_lets_aws_refuse_the_launch_itself(moto_server, deploy, tmp_path, ec2, capsys):
    refuse_launches = ProxyConfig(refusals=(Refusal("RunInstances"),))
    with Ec2Proxy(moto_server.url, refuse_launches) as proxy:
        deployment = deploy(fleet(proxy, tmp_path, count=1, launch_dry_run=False))
        with pytest.raises(WorkflowFailed):
            deployment.install(task_retries=0)
    assert run_instances(proxy) == (1, 0)
    assert live_instances(ec2) == []
    out = capsys.readouterr().out
    assert "run_instances' -> " in out and "UnauthorizedOperation" in out


def test_the_preflight_workflow_dry_runs_even_with_launch_dry_run_false(moto_server, deploy, tmp_path):
    with Ec2Proxy(moto_server.url) as proxy:
        deploy(fleet(proxy, tmp_path, count=2, launch_dry_run=False)).execute("aws_preflight")
    assert run_instances(proxy) == (0, 1)


def test_launch_dry_run_must_be_a_boolean(make_ctx):
    properties = {"image_id": IMAGE_ID, "instance_type": "t3.micro", "launch_dry_run": "sometimes"}
    with pytest.raises(Exception, match="launch_dry_run"):
        instance_request.parse(make_ctx(properties).node.properties)


# --- the memo of passed dry runs, directly ------------------------------------------


@pytest.fixture
def dry_run(moto_server, make_ctx):
    """Dry-runs a node instance's request through a proxy; yields (dry run, proxy).
    dry run(instance id, **properties) -> AWS's refusal or None."""
    with Ec2Proxy(moto_server.url) as proxy:
        aws_config = {"endpoint_url": proxy.url}

        def send(instance_id: str = "vm_aaaaaa", node_id: str = "vm", **properties):
            properties = {
                "image_id": IMAGE_ID,
                "instance_type": "t3.micro",
                "agent_config": NO_AGENT,
                "aws_config": aws_config,
                **properties,
            }
            ctx = make_ctx(properties, node_id=node_id, instance_id=instance_id)
            known = instance_request.read(ctx)
            request = instance_request.build_request(known, instance_request.parse(ctx.node.properties))
            client = connection.ec2_client(properties["aws_config"])
            return instance_request.dry_run_launch(known, ctx.logger, client, request)

        yield send, proxy


def dry_runs(proxy: Ec2Proxy) -> int:
    return Counter(proxy.dry_runs)["RunInstances"]


def test_instances_of_one_node_with_one_request_shape_share_one_dry_run(dry_run):
    send, proxy = dry_run
    assert [send(instance_id) for instance_id in ("vm_aaaaaa", "vm_bbbbbb", "vm_cccccc")] == [None] * 3
    assert dry_runs(proxy) == 1


def test_a_different_request_shape_node_or_endpoint_gets_its_own_dry_run(dry_run, moto_server):
    send, proxy = dry_run
    send()
    send(instance_type="t3.small")  # another shape
    send(node_id="other")  # another node
    send(aws_config={"endpoint_url": proxy.url, "region_name": "us-west-2"})  # another region
    send(aws_config={"endpoint_url": proxy.url, "aws_access_key_id": "AKIAOTHER", "aws_secret_access_key": "x"})
    assert dry_runs(proxy) == 5


def test_refused_dry_runs_are_each_sent_and_the_first_that_passes_is_kept(dry_run):
    send, proxy = dry_run
    proxy.config = REFUSE_LAUNCH_DRY_RUNS
    assert send() is not None and send("vm_bbbbbb") is not None
    assert dry_runs(proxy) == 2
    proxy.config = ProxyConfig()
    assert send() is None and send("vm_bbbbbb") is None
    assert dry_runs(proxy) == 3


def test_a_passed_dry_run_is_trusted_for_a_few_minutes_only(dry_run, later):
    send, proxy = dry_run
    send()
    later(instance_request.LAUNCH_DRY_RUN_SECONDS - 5)
    send("vm_bbbbbb")
    assert dry_runs(proxy) == 1
    later(10)
    send("vm_cccccc")
    assert dry_runs(proxy) == 2


def test_the_memo_keeps_a_bounded_number_of_shapes(dry_run, monkeypatch):
    send, proxy = dry_run
    monkeypatch.setattr(instance_request._passed_launch_dry_runs, "size", 2)
    for node in ("a", "b", "c"):
        send(node_id=node)
    send(node_id="c")
    send(node_id="a")  # the oldest, forgotten
    assert dry_runs(proxy) == 4


def test_threads_validating_at_once_share_one_dry_run(dry_run):
    from concurrent.futures import ThreadPoolExecutor

    send, proxy = dry_run
    send(node_id="warm-up")  # builds the client once
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda n: send(f"vm_{n:06d}"), range(8)))
    assert answers == [None] * 8
    assert dry_runs(proxy) == 2


# --- the image check, shared the same way ---------------------------------------------


def test_an_image_not_found_is_described_again(calls):
    client = connection.ec2_client({})
    assert aws.find_image(client, "ami-0000000000000dead") is None
    assert aws.find_image(client, "ami-0000000000000dead") is None
    assert calls.operations.count("DescribeImages") == 2


def test_an_image_found_with_other_credentials_is_described_again(calls):
    for access_key in ("AKIAFIRST", "AKIASECOND", "AKIAFIRST"):
        client = connection.ec2_client({"aws_access_key_id": access_key, "aws_secret_access_key": "testing"})
        assert aws.find_image(client, IMAGE_ID)["ImageId"] == IMAGE_ID
    assert calls.operations.count("DescribeImages") == 2


def test_the_reference_states_five_minutes_and_256_shapes():
    assert instance_request.LAUNCH_DRY_RUN_SECONDS == 5 * 60
    assert instance_request.LAUNCH_DRY_RUN_MEMO_SIZE == 256
    assert aws.IMAGE_CACHE_SECONDS == 5 * 60


# --- manager mode: one process per operation -------------------------------------------

MANAGED_N = 3
plugin = test_manager_mode.plugin  # the session's plugin venv, made from the wagon in dist/


@pytest.fixture
def managed(tmp_path, plugin) -> test_manager_mode.ManagedDeployer:
    return test_manager_mode.ManagedDeployer(tmp_path, plugin)


def managed_fleet(managed, proxy: Ec2Proxy, tmp_path, **properties):
    nodes = topology.fleet({"endpoint_url": proxy.url}, MANAGED_N)
    nodes["keypair"]["properties"]["private_key_path"] = str(tmp_path / "keys" / "key.pem")
    nodes["vm"]["properties"].update(wait_interval=0, **properties)
    return managed(nodes)


@pytest.mark.manager_mode
def test_on_a_manager_each_instance_dry_runs_its_launch_and_describes_the_image(moto_server, managed, tmp_path):
    with Ec2Proxy(moto_server.url) as proxy:
        managed_fleet(managed, proxy, tmp_path).install(task_retries=5)
    assert run_instances(proxy) == (MANAGED_N, MANAGED_N)
    assert proxy.counts()["DescribeImages"] == MANAGED_N


@pytest.mark.manager_mode
def test_on_a_manager_launch_dry_run_false_spends_one_run_instances_per_instance(moto_server, managed, tmp_path, ec2):
    with Ec2Proxy(moto_server.url) as proxy:
        managed_fleet(managed, proxy, tmp_path, launch_dry_run=False).install(task_retries=5)
    assert run_instances(proxy) == (MANAGED_N, 0)
    assert len(live_instances(ec2)) == MANAGED_N
