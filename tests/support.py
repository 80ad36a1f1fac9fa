"""Test helpers: a moto EC2 server over HTTP, and blueprints run through
cloudify-common's local workflow engine (tools.local, shared with bench)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from tools import local, offline, topology
from tools.ec2proxy import MUTATING_PREFIXES
from tools.emulator import MotoServer  # noqa: F401  (re-exported for the tests)
from tools.local import (  # noqa: F401  (re-exported for the tests)
    IMAGE_ID,
    OFFLINE_TYPES,
    PLUGIN_YAML,
    ROOT,
    TYPES_URL,
    types_resolver,
    write_blueprint,
)

REFERENCE_TYPES = ROOT.parent / "shared" / "reference" / "cloudify-types"
CFY = Path(sys.executable).parent / "cfy"
NO_AGENT = {"install_method": "none"}
LIVE_STATES = ("pending", "running", "stopping", "stopped")


def instance_node(*relationships: tuple[str, str], **properties) -> dict:
    """An Instance node template: IMAGE_ID on t3.micro, no agent, states polled
    without a pause (moto settles a state by the next describe), and each
    relationship a (type, target) pair; ``properties`` override."""
    node: dict = {
        "type": "cloudify.aws.nodes.Instance",
        "properties": {
            "image_id": IMAGE_ID,
            "instance_type": "t3.micro",
            "agent_config": NO_AGENT,
            "wait_interval": 0,
            **properties,
        },
    }
    if relationships:
        node["relationships"] = [{"type": kind, "target": target} for kind, target in relationships]
    return node


# The import URLs of CLASSIC_BLUEPRINT.
CLASSIC_TYPES_URL = "http://www.getcloudify.org/spec/cloudify/3.2/types.yaml"
CLASSIC_PLUGIN_URL = "http://www.getcloudify.org/spec/aws-plugin/1.2/plugin.yaml"
CLASSIC_BLUEPRINT = """\
# A blueprint as the classic plugin's users wrote them (Cloudify 3.2 era).
tosca_definitions_version: cloudify_dsl_1_1

imports:
  - http://www.getcloudify.org/spec/cloudify/3.2/types.yaml
  - http://www.getcloudify.org/spec/aws-plugin/1.2/plugin.yaml

inputs:
  key_path:
    type: string

node_templates:
  key:
    type: cloudify.aws.nodes.KeyPair
    properties:
      resource_id: offline-classic-key
      private_key_path: { get_input: key_path }

  group:
    type: cloudify.aws.nodes.SecurityGroup
    properties:
      resource_id: offline-classic-group
      description: classic rules
      rules:
        - ip_protocol: tcp
          from_port: 22
          to_port: 22
          cidr_ip: 0.0.0.0/0

  address:
    type: cloudify.aws.nodes.ElasticIP

  server:
    type: cloudify.aws.nodes.Instance
    properties:
      install_agent: false
      image_id: IMAGE
      instance_type: m3.medium
    relationships:
      - type: cloudify.aws.relationships.instance_connected_to_keypair
        target: key
      - type: cloudify.aws.relationships.instance_connected_to_security_group
        target: group
      - type: cloudify.aws.relationships.instance_connected_to_elastic_ip
        target: address

outputs:
  address:
    value: { get_attribute: [server, public_ip_address] }
""".replace("IMAGE", IMAGE_ID)


def write_classic_blueprint(folder: Path, dsl: str = "cloudify_dsl_1_1") -> Path:
    """Writes ``folder/classic.yaml``: CLASSIC_BLUEPRINT, declaring ``dsl``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "classic.yaml"
    path.write_text(CLASSIC_BLUEPRINT.replace("cloudify_dsl_1_1", dsl))
    return path


def assert_nothing_left(ec2) -> None:
    """No live instance, address, key pair or security group (but the default) is left."""
    assert live_instances(ec2) == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [group["GroupName"] for group in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]


def reference_topology(aws_config: dict, key_path: Path) -> dict:
    """tools.topology's reference node templates (the ones bench deploys), the
    private key written to ``key_path`` and the instance polled without a pause."""
    nodes = topology.reference(aws_config)
    nodes["keypair"]["properties"]["private_key_path"] = str(key_path)
    nodes["vm"]["properties"]["wait_interval"] = 0
    return nodes


def live_instances(ec2, states: tuple[str, ...] = LIVE_STATES) -> list[dict]:
    """The instances in one of ``states`` (by default, those not shutting down or terminated)."""
    found = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": list(states)}])
    return [instance for reservation in found["Reservations"] for instance in reservation["Instances"]]


class LocalDeployment(local.LocalDeployment):
    """tools.local's deployment, named "test", with the engine's lines also on
    stdout, where the tests read them with capsys."""

    def __init__(self, blueprint, name: str = "test", inputs: dict | None = None, resolver=None) -> None:
        super().__init__(blueprint, name=name, inputs=inputs, resolver=resolver, echo=True)


def cfy_workdir(folder: Path) -> Path:
    """``folder`` as a cfy working directory with the offline import rules. Skips
    without the Cloudify CLI (`make demo` installs it); fails instead under CI=true."""
    if not CFY.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have the Cloudify CLI ({CFY}): run make demo first")
        pytest.skip("the Cloudify CLI is not installed (run make demo)")
    assert offline.main(["write-cfy-config", str(folder)]) == 0
    return folder


def run_cfy(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CFY), *args],
        env=dict(os.environ, CFY_WORKDIR=str(workdir)),
        capture_output=True,
        text=True,
        timeout=300,
    )


def cfy(workdir: Path, *args: str) -> str:
    """Runs cfy in ``workdir``, which must succeed; returns what it printed."""
    result = run_cfy(workdir, *args)
    assert result.returncode == 0, f"cfy {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


class Deployer:
    """Writes node templates (and other blueprint sections) as a blueprint in
    ``folder`` and returns its deployment, not yet installed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(
        self, node_templates: dict | str, dsl: str = "cloudify_dsl_1_3", inputs=None, resolver=None, **sections
    ) -> LocalDeployment:
        path = write_blueprint(self.folder, node_templates, dsl=dsl, **sections)
        return LocalDeployment(path, inputs=inputs, resolver=resolver)


class CallRecorder:
    """Records the EC2 API operations the plugin's clients make; dry runs
    (DryRun=True, which change nothing) are also listed in ``dry_runs``."""

    MUTATING_PREFIXES = MUTATING_PREFIXES

    def __init__(self) -> None:
        self.operations: list[str] = []
        self.dry_runs: list[str] = []
        self._dry: list[bool] = []

    def record(self, model, params=None, **_) -> None:
        self.operations.append(model.name)
        dry = str(((params or {}).get("body") or {}).get("DryRun", "")).lower() == "true"
        self._dry.append(dry)
        if dry:
            self.dry_runs.append(model.name)

    @property
    def mutating(self) -> list[str]:
        """Operations that change something: mutating ones sent without DryRun."""
        return [
            name
            for name, dry in zip(self.operations, self._dry, strict=True)
            if name.startswith(MUTATING_PREFIXES) and not dry
        ]


def client_for(url: str, config=None):
    """A boto3 EC2 client for ``url`` (the emulator, or a proxy in front of it) with the tests' fake credentials."""
    return boto3.client(
        "ec2",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def moto_images(*image_ids: str) -> list[dict]:
    """moto's own definitions of ``image_ids``, in the form MOTO_AMIS_PATH reads."""
    from moto.utilities.utils import load_resource

    images = [image for image in load_resource("ec2/resources/amis.json") if image["ami_id"] in image_ids]
    assert len(images) == len(image_ids), f"moto does not define all of {image_ids}"
    return images


@contextlib.contextmanager
def sdk_debug_logs(caplog):
    """botocore, boto3 and urllib3 log at DEBUG, and caplog captures it all; levels restored after."""
    names = ("botocore", "urllib3", "boto3")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG):
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def quiet_logs() -> None:
    for name in ("werkzeug", "botocore", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def hook_clients(monkeypatch, event: str, handler) -> None:
    """The one client hook: registers ``handler`` for botocore's ``event`` on every
    client the plugin makes from now on (its client cache is cleared)."""
    from ec2 import connection

    create = connection._create_client

    def hooked(settings):
        client = create(settings)
        client.meta.events.register(event, handler)
        return client

    monkeypatch.setattr(connection, "_create_client", hooked)
    connection.clear_cache()


def die_once_after(monkeypatch, operation: str) -> list:
    """The one crash injector: the plugin's next successful EC2 ``operation``
    (such as "AllocateAddress") raises SystemExit once AWS has acted and before
    the plugin sees the answer, as a process that dies there would. Works for
    a workflow (the task fails) and for an operation called directly (the
    SystemExit propagates). Returns a list that holds True once it happened."""
    died: list = []

    def die_once(http_response, **_):
        if not died and http_response.status_code < 300:  # not a refused call or a dry run: AWS acted
            died.append(True)
            raise SystemExit(f"the plugin process died right after {operation}")

    hook_clients(monkeypatch, f"after-call.ec2.{operation}", die_once)
    return died


def refuse_release_while_associated(monkeypatch) -> None:
    """Makes the plugin's clients answer ReleaseAddress of an associated
    address with InvalidIPAddress.InUse, as EC2 does and moto does not."""
    from botocore.exceptions import ClientError

    from ec2 import connection

    create = connection._create_client  # unhooked, for the check's own call

    def refuse(params, **_):
        client = create({"retry_mode": "standard", "max_attempts": 1})
        (address,) = client.describe_addresses(AllocationIds=[params["AllocationId"]])["Addresses"]
        if address.get("AssociationId"):
            error = {"Error": {"Code": "InvalidIPAddress.InUse", "Message": "in use"}}
            raise ClientError(error, "ReleaseAddress")

    hook_clients(monkeypatch, "provide-client-params.ec2.ReleaseAddress", refuse)


def owned_by(ctx, resource_type: str, name: str | None = None) -> list[dict]:
    """TagSpecifications that mark a resource as made by ``ctx``'s node instance."""
    from ec2 import aws, ownership

    owner = ownership.owner_tags(ctx.deployment.id, ctx.instance.id)
    return aws.tag_specifications(resource_type, ownership.creation_tags(owner, {}, name))


LONG_AGO = "2020-01-01T00:00:00.000+00:00"


def made_long_ago(runtime_properties) -> None:
    """Dates what the runtime properties record as created (or associated) before
    any propagation window: EC2's NotFound for it is then believed at once."""
    for key in ("created_at", "associated_at"):
        if key in runtime_properties:
            runtime_properties[key] = LONG_AGO


def interrupted_create(ctx) -> None:
    """Marks ``ctx``'s node instance as having begun a create that never finished."""
    ctx.instance.runtime_properties["create_started"] = True


def listings(*answers: list) -> tuple:
    """A listing answering each of ``answers`` in turn (the last one again after
    that), and the list its calls are counted in."""
    asked: list[int] = []

    def listing() -> list:
        asked.append(1)
        return answers[min(len(asked), len(answers)) - 1]

    return listing, asked


def advancing_clock(monkeypatch) -> list[float]:
    """A monotonic clock that only pauses move on; its reading is ``clock[0]``."""
    from ec2 import aws

    clock = [0.0]
    monkeypatch.setattr(aws.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(aws.time, "sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    return clock


def stubbed_error(code: str, status: int, operation: str = "describe_key_pairs"):
    """An EC2 client (no network) whose next ``operation`` answers error ``code``."""
    client = boto3.client("ec2", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_client_error(operation, service_error_code=code, service_message="nope", http_status_code=status)
    stubber.activate()
    return client


class HttpAnswer:
    """The HTTP answer part of botocore's needs-retry ``response`` argument, for hooks under test."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


def came_within(calls: list, cause: str, effect: str, window: float, dry_run: bool = False) -> bool:
    """Whether the first ``effect`` call after the first ``cause`` that EC2 carried
    out (a dry run or not, as ``dry_run`` says) reached the proxy less than
    ``window`` seconds after it, with a margin: only then can the lag that ``cause``
    starts still refuse it. On a loaded machine a short window can pass first."""
    carried_out = (c for c in calls if c.action == cause and not c.dry_run and c.outcome == "forwarded")
    cause_at = next(c.started for c in carried_out if c.status == 200)
    effect_at = next(c.started for c in calls if c.action == effect and c.dry_run == dry_run and c.started >= cause_at)
    return effect_at + 0.2 < cause_at + window
