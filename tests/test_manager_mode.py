"""Manager mode (tools.manager): every operation runs in a new Python process of
the plugin venv made from the wagon, as a Cloudify manager runs it, while the
workflow runs here on the local engine, with the deployment in a FileStorage.

These need the wagon that `make wagon` leaves in dist/ (built from this tree's
sources): without it they skip, and under CI=true they fail. To try another
wagon, set MANAGER_MODE_WAGON to its path. Run them alone with
`make test-manager` (or `pytest -m manager_mode`).

Most of them fork each operation's process from a fork server that imported the
plugin once and built its clients once (tools.manager.ForkServer): a new process
each time, with nothing an earlier operation left, about a second sooner. The tests of the processes
themselves start a Python for each, as a manager does; so does every test with
MANAGER_MODE_START=spawn."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import pytest
from cloudify.exceptions import WorkflowFailed

from ec2 import connection, secrets
from tests.support import (
    IMAGE_ID,
    NO_AGENT,
    ROOT,
    assert_nothing_left,
    instance_node,
    live_instances,
    write_blueprint,
    write_classic_blueprint,
)
from tests.test_exactly_once import (
    MUTATING_CREATE_CALLS,
    NOTHING,
    ONE_OF_EACH,
    SEEDS,
    install_and_uninstall_through,
    inventory,
    reference,
)
from tests.test_wagon import DIST, built_from_this_tree
from tools import manager, offline
from tools.ec2proxy import Ec2Proxy, ProxyConfig
from tools.local import LocalDeployment
from tools.manager_dispatch import DIED_EXIT_CODE, LockedFileStorage, warm_up

pytestmark = pytest.mark.manager_mode

IN_CI = os.environ.get("CI", "").lower() == "true"
WAGON_VARIABLE = "MANAGER_MODE_WAGON"
START = os.environ.get("MANAGER_MODE_START", "fork")
# test_exactly_once's five seeds, as in one process (each operation pays a Python
# start and the plugin's import, about a second: this file's longest tests).
FAULT_SEEDS = SEEDS
RETRIED_OPERATIONS = ("cloudify.interfaces.lifecycle.create", "cloudify.interfaces.lifecycle.start")


def unusable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (.ci/run runs `make wagon` before `make test`)")
    pytest.skip(f"{reason}: run `make wagon`")


@pytest.fixture(scope="session")
def plugin() -> manager.PluginVenv:
    """The plugin venv of the wagon in dist/ (or MANAGER_MODE_WAGON), made once per
    wagon and cached under build/manager/."""
    chosen = os.environ.get(WAGON_VARIABLE)
    if chosen:
        wagon = Path(chosen)
        if not wagon.is_file():
            pytest.fail(f"{WAGON_VARIABLE}={chosen} is not a file")
    else:
        try:
            wagon = manager.wagon_in(DIST)
        except manager.WagonNotFound:
            unusable("manager mode installs the plugin from its wagon, and there is no single wagon in dist/")
        if not built_from_this_tree(wagon):
            unusable(f"dist/{wagon.name} was built from other sources than this tree's")
    return manager.plugin_venv(wagon)


class ManagedDeployer:
    """Deploys node templates (or a blueprint file) in manager mode: the blueprint
    in ``folder/blueprint``, the deployment's storage in ``folder/storage``."""

    def __init__(self, folder: Path, plugin: manager.PluginVenv, start: str = START) -> None:
        self.folder = folder
        self.plugin = plugin
        self.start = start

    def __call__(
        self, node_templates: dict | str, dsl: str = "cloudify_dsl_1_3", inputs=None, resolver=None, **sections
    ) -> manager.ManagerDeployment:
        path = write_blueprint(self.folder / "blueprint", node_templates, dsl=dsl, **sections)
        return self.blueprint(path, inputs=inputs, resolver=resolver)

    def blueprint(self, path: Path, inputs=None, resolver=None, **options) -> manager.ManagerDeployment:
        return manager.ManagerDeployment(
            path,
            name="test",
            inputs=inputs,
            resolver=resolver,
            echo=True,
            storage_dir=self.folder / "storage",
            plugin=self.plugin,
            **{"start": self.start, **options},
        )


@pytest.fixture
def managed(tmp_path, plugin) -> ManagedDeployer:
    return ManagedDeployer(tmp_path, plugin)


def die_once_after(monkeypatch, operation: str, folder: Path) -> Path:
    """tests/support.py's die_once_after for operations in their own processes: the
    first operation process whose EC2 ``operation`` succeeds dies right after AWS
    acted (os._exit), once. Returns the marker file that exists once it happened."""
    marker = folder / f"died-after-{operation}"
    monkeypatch.setenv(manager.DIE_ONCE_AFTER_VARIABLE, manager.die_once_after_setting(operation, marker))
    return marker


# -- the storage ------------------------------------------------------------------

# Counts in a node instance's runtime properties, as operations update them: read,
# then update with the version read (retried on a version conflict); meanwhile
# every node instance file is read whole.
COUNT_SCRIPT = """
import sys
from cloudify.workflows.local import StorageConflictError
from tools.manager_dispatch import LockedFileStorage

storage = LockedFileStorage(sys.argv[1]).load("test")
for _ in range(int(sys.argv[3])):
    while True:
        instance = storage.get_node_instance(sys.argv[2])
        storage.get_node_instances()
        properties = {**instance.runtime_properties, "count": instance.runtime_properties.get("count", 0) + 1}
        try:
            storage.update_node_instance(instance.id, version=instance.version, runtime_properties=properties)
            break
        except StorageConflictError:
            continue
"""


def test_node_instance_updates_from_parallel_processes_are_neither_lost_nor_read_half_written(tmp_path):
    key = {"type": "cloudify.aws.nodes.KeyPair", "properties": {"private_key_path": str(tmp_path / "key.pem")}}
    blueprint = write_blueprint(tmp_path / "blueprint", {"key": key, "other": key})
    storage_dir = tmp_path / "storage"
    deployment = LocalDeployment(blueprint, name="test", storage=LockedFileStorage(storage_dir))
    (instance,) = deployment.instances("key")
    processes, updates = 4, 50
    command = [sys.executable, "-c", COUNT_SCRIPT, str(storage_dir), instance.id, str(updates)]
    counters = [subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    for counter in counters:
        _, errors = counter.communicate(timeout=120)
        assert counter.returncode == 0, errors
    assert deployment.runtime("key")["count"] == processes * updates


# -- the processes --------------------------------------------------------------


@pytest.mark.parametrize("start", manager.STARTS)
def test_each_operation_runs_in_a_new_process_that_imports_the_plugin_from_the_wagons_venv(
    tmp_path, plugin, ec2, start
):
    key = {"type": "cloudify.aws.nodes.KeyPair", "properties": {"private_key_path": str(tmp_path / "keys" / "key.pem")}}
    deployment = ManagedDeployer(tmp_path, plugin, start)({"key": key})
    deployment.install()
    assert [key["KeyName"] for key in ec2.describe_key_pairs()["KeyPairs"]] == ["key"]
    deployment.uninstall()
    assert ec2.describe_key_pairs()["KeyPairs"] == []

    processes = deployment.processes
    assert [p.operation for p in processes] == [
        "cloudify.interfaces.validation.create",
        "cloudify.interfaces.lifecycle.create",
        "cloudify.interfaces.lifecycle.delete",
    ]
    pids = [p.pid for p in processes]
    assert len(set(pids)) == len(pids) and os.getpid() not in pids
    if start == "fork":
        assert manager.fork_server(plugin).process.pid not in pids
    for process in processes:
        assert process.outcome == "result" and process.returncode == 0
        assert plugin.holds(process.executable)
        assert plugin.holds(process.package_file), f"ec2 was imported from {process.package_file}"
        assert not Path(process.package_file).is_relative_to(ROOT / "ec2")


def test_an_operation_error_keeps_its_meaning_and_its_message_reaches_the_tally(managed, tmp_path):
    properties = {"image_id": IMAGE_ID, "instance_type": "no.such.type", "agent_config": NO_AGENT}
    deployment = managed({"vm": {"type": "cloudify.aws.nodes.Instance", "properties": properties}})
    with pytest.raises(WorkflowFailed):
        deployment.install(task_retries=5)
    (process,) = deployment.processes  # NonRecoverableError: failed at once, not retried
    assert process.outcome == "error"
    assert deployment.tally.events["failed"] == 1 and deployment.tally.events["rescheduled"] == 0
    assert any("no.such.type" in line and f"[pid {process.pid}]" in line for line in deployment.tally.last)


def test_an_operation_retry_from_a_process_reschedules_the_task(moto_server, managed):
    # The proxy keeps the instance pending for 8 s, longer than start's process takes to begin even on a
    # loaded machine (forked, as ``managed`` does by default), and the plugin waits for none: it asks for a retry.
    with Ec2Proxy(moto_server.url, ProxyConfig(latency=8)) as proxy:
        vm = instance_node(wait_timeout=0, retry_after=1, aws_config={"endpoint_url": proxy.url})
        deployment = managed({"vm": vm})
        deployment.install(task_retries=60)
    assert deployment.state("vm") == "started"
    assert deployment.tally.events["rescheduled"] >= 1 and deployment.tally.events["failed"] == 0
    retried = [p for p in deployment.processes if p.outcome == "error"]
    assert retried and all(p.operation in RETRIED_OPERATIONS for p in retried)


@pytest.mark.parametrize("start", manager.STARTS)
def test_an_operation_process_that_outlives_its_timeout_is_killed_and_its_task_fails(
    moto_server, plugin, tmp_path, start
):
    # Every answer is held 10 s, so the first operation (validation) outlives its 1 s.
    with Ec2Proxy(moto_server.url, ProxyConfig(delay_rate=1.0, delay_seconds=10)) as proxy:
        properties = {"private_key_path": str(tmp_path / "key.pem"), "aws_config": {"endpoint_url": proxy.url}}
        blueprint = write_blueprint(
            tmp_path / "blueprint", {"key": {"type": "cloudify.aws.nodes.KeyPair", "properties": properties}}
        )
        deployment = ManagedDeployer(tmp_path, plugin, start).blueprint(blueprint, operation_timeout=1)
        if start == "fork":
            manager.fork_server(plugin)  # started (and warmed up) before the operation's time counts
        with pytest.raises(WorkflowFailed):
            deployment.install()
    (process,) = deployment.processes
    assert process.outcome == "timeout" and process.returncode < 0  # killed
    assert process.seconds < 10
    assert any("was killed after 1 s" in line for line in deployment.tally.last)


def children_of(pid: int) -> list[int]:
    """The live (not zombie) processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_a_forked_operation_process_dies_with_its_fork_server(moto_server, plugin, tmp_path):
    # Every answer is held 30 s: the validation's process is still running when its server is killed.
    with Ec2Proxy(moto_server.url, ProxyConfig(delay_rate=1.0, delay_seconds=30)) as proxy:
        properties = {"private_key_path": str(tmp_path / "key.pem"), "aws_config": {"endpoint_url": proxy.url}}
        deployment = ManagedDeployer(tmp_path, plugin, "fork")(
            {"key": {"type": "cloudify.aws.nodes.KeyPair", "properties": properties}}
        )
        server = manager.fork_server(plugin).process
        failed: list[BaseException] = []
        install = threading.Thread(target=lambda: _catch(failed, deployment.install), daemon=True)
        install.start()
        children = _within(20, lambda: children_of(server.pid))
        assert children, "no operation process was forked"
        server.kill()
        server.wait()
        assert _within(10, lambda: not any(Path(f"/proc/{pid}").exists() for pid in children))
        install.join(timeout=30)
    assert not install.is_alive() and failed and isinstance(failed[0], WorkflowFailed)
    assert manager.fork_server(plugin).process.pid != server.pid  # a new server serves what comes next


def test_the_fork_servers_warm_up_changes_nothing_of_the_plugins_own():
    connection.ec2_client({"endpoint_url": "http://127.0.0.1:9", "ec2_region_name": "us-east-1"})
    before = (dict(connection._clients), logging.getLogRecordFactory(), set(secrets._known))
    warm_up(connection)
    assert (dict(connection._clients), logging.getLogRecordFactory(), set(secrets._known)) == before


def _catch(failed: list[BaseException], run) -> None:
    try:
        run()
    except BaseException as error:
        failed.append(error)


def _within(seconds: float, check):
    """``check()``'s first true answer within ``seconds`` (polled), else its last."""
    started = time.monotonic()
    while not (answer := check()) and time.monotonic() - started < seconds:
        time.sleep(0.1)
    return answer


# -- whole deployments ------------------------------------------------------------


def test_the_reference_topology_installs_one_of_each_and_uninstalls_leaving_nothing(managed, tmp_path, ec2):
    deployment = reference(managed, tmp_path, {})
    deployment.install()
    assert inventory(ec2) == ONE_OF_EACH
    nodes = ("keypair", "security_group", "elastic_ip", "vm")
    assert {node: deployment.state(node) for node in nodes} == dict.fromkeys(nodes, "started")
    (server,) = live_instances(ec2)
    assert deployment.runtime("vm")["aws_resource_id"] == server["InstanceId"]
    deployment.uninstall()
    assert inventory(ec2) == NOTHING
    assert len({p.pid for p in deployment.processes}) == len(deployment.processes)


def test_a_classic_dsl_1_1_blueprint_installs_and_uninstalls_leaving_nothing(managed, tmp_path, ec2):
    deployment = managed.blueprint(
        write_classic_blueprint(tmp_path / "blueprint"),
        inputs={"key_path": str(tmp_path / "key.pem")},
        resolver=offline.import_resolver(),
    )
    deployment.install()
    (address,) = ec2.describe_addresses()["Addresses"]
    assert deployment.env.outputs()["address"] == address["PublicIp"]
    deployment.uninstall()
    assert_nothing_left(ec2)


# -- exactly once, under faults and crashes -------------------------------------------


@pytest.mark.parametrize("seed", FAULT_SEEDS)
def test_twenty_percent_request_faults_still_make_exactly_one_of_each_and_leave_nothing(
    moto_server, managed, tmp_path, ec2, seed
):
    with Ec2Proxy(moto_server.url, ProxyConfig(seed=seed, fault_rate=0.2, client_token_dedup=True)) as proxy:
        install_and_uninstall_through(proxy, managed, tmp_path, ec2)
        assert proxy.outcomes()["fault"] > 0


@pytest.mark.parametrize("seed", FAULT_SEEDS)
def test_twenty_percent_lost_answers_still_make_exactly_one_of_each_and_leave_nothing(
    moto_server, managed, tmp_path, ec2, seed
):
    config = ProxyConfig(seed=seed, lost_rate=0.2, client_token_dedup=True)
    with Ec2Proxy(moto_server.url, config) as proxy:
        install_and_uninstall_through(proxy, managed, tmp_path, ec2)
        assert sum(n for outcome, n in proxy.outcomes().items() if outcome.startswith("lost")) > 0


@pytest.mark.parametrize("operation", MUTATING_CREATE_CALLS)
def test_a_crashed_process_right_after_each_create_call_then_a_rerun_leaves_exactly_one_of_each(
    managed, tmp_path, ec2, monkeypatch, operation
):
    deployment = reference(managed, tmp_path, {})
    died = die_once_after(monkeypatch, operation, tmp_path)
    with pytest.raises(WorkflowFailed):
        deployment.install()
    assert died.exists()
    (crashed,) = [p for p in deployment.processes if p.outcome == "died"]
    assert crashed.returncode == DIED_EXIT_CODE
    deployment.install(task_retries=3)
    assert inventory(ec2) == ONE_OF_EACH
    deployment.uninstall()
    assert inventory(ec2) == NOTHING


# -- an assumed role --------------------------------------------------------------


def test_on_a_manager_each_operation_process_assumes_the_role_once(managed, tmp_path, moto_server):
    with Ec2Proxy(moto_server.url) as proxy:
        aws_config = {
            "role_arn": "arn:aws:iam::123456789012:role/cloudify-deployer",
            "endpoint_url": proxy.url,
            "sts_endpoint_url": proxy.url,  # counted by the proxy too
        }
        properties = {"private_key_path": str(tmp_path / "keys" / "key.pem"), "aws_config": aws_config}
        deployment = managed({"key": {"type": "cloudify.aws.nodes.KeyPair", "properties": properties}})
        deployment.install()
        deployment.uninstall()
        ec2_signers = {call.access_key_id for call in proxy.seen() if call.action != "AssumeRole"}
    assert len(deployment.processes) == 3  # validation.create, create, delete
    assert proxy.counts()["AssumeRole"] == 3
    assert len(ec2_signers) == 3  # each process signs with its own role session
