"""Test helpers: a moto EC2 server over HTTP, and blueprints run through
cloudify-common's local workflow engine."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import yaml
from cloudify.workflows import local
from dsl_parser.import_resolver.default_import_resolver import DefaultImportResolver

from tools.emulator import MotoServer, free_port  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_YAML = ROOT / "plugin.yaml"
OFFLINE_TYPES = ROOT / "offline" / "types.yaml"
REFERENCE_TYPES = ROOT.parent / "shared" / "reference" / "cloudify-types"
TYPES_URL = "http://www.getcloudify.org/spec/cloudify/7.0.0/types.yaml"
AGENT_MODULES = ["cloudify_agent.operations", "cloudify_agent.installer.operations"]
IMAGE_ID = "ami-12c6146b"


def types_resolver(types_file: Path = OFFLINE_TYPES) -> DefaultImportResolver:
    return DefaultImportResolver(rules=[{TYPES_URL: types_file.as_uri()}])


def write_blueprint(folder: Path, node_templates: dict | str, dsl: str = "cloudify_dsl_1_3", **sections) -> Path:
    """Writes a blueprint importing the standard types URL and plugin.yaml."""
    if isinstance(node_templates, str):
        node_templates = yaml.safe_load(textwrap.dedent(node_templates))
    blueprint = {
        "tosca_definitions_version": dsl,
        "imports": [TYPES_URL, PLUGIN_YAML.as_uri()],
        "node_templates": node_templates,
        **sections,
    }
    path = folder / "blueprint.yaml"
    path.write_text(yaml.safe_dump(blueprint, sort_keys=False))
    return path


class LocalDeployment:
    """A blueprint deployed in memory with cloudify.workflows.local."""

    def __init__(self, blueprint: Path, name: str = "test", inputs: dict | None = None, resolver=None) -> None:
        self.env = local.init_env(
            str(blueprint),
            name=name,
            inputs=inputs,
            storage=local.InMemoryStorage(),
            resolver=resolver or types_resolver(),
            ignored_modules=AGENT_MODULES,
        )

    def execute(self, workflow: str, task_retries: int = 0, **parameters):
        return self.env.execute(workflow, parameters=parameters, task_retries=task_retries, task_retry_interval=0)

    def install(self, **kwargs):
        return self.execute("install", **kwargs)

    def uninstall(self, **kwargs):
        return self.execute("uninstall", **kwargs)

    def execute_operation(self, operation: str, node_ids: list[str], **kwargs):
        return self.execute("execute_operation", operation=operation, node_ids=node_ids, **kwargs)

    def instances(self, node_id: str) -> list:
        return [i for i in self.env.storage.get_node_instances() if i.node_id == node_id]

    def runtime(self, node_id: str) -> dict:
        (instance,) = self.instances(node_id)
        return dict(instance.runtime_properties)

    def state(self, node_id: str) -> str:
        (instance,) = self.instances(node_id)
        return instance.state


class CallRecorder:
    """Records the EC2 API operations the plugin's clients make."""

    MUTATING_PREFIXES = (
        "Create",
        "Delete",
        "Run",
        "Terminate",
        "Start",
        "Stop",
        "Authorize",
        "Revoke",
        "Allocate",
        "Release",
        "Associate",
        "Disassociate",
        "Import",
        "Modify",
    )

    def __init__(self) -> None:
        self.operations: list[str] = []

    def record(self, model, **_) -> None:
        self.operations.append(model.name)

    @property
    def mutating(self) -> list[str]:
        return [name for name in self.operations if name.startswith(self.MUTATING_PREFIXES)]


def moto_images(*image_ids: str) -> list[dict]:
    """moto's own definitions of ``image_ids``, in the form MOTO_AMIS_PATH reads."""
    from moto.utilities.utils import load_resource

    images = [image for image in load_resource("ec2/resources/amis.json") if image["ami_id"] in image_ids]
    assert len(images) == len(image_ids), f"moto does not define all of {image_ids}"
    return images


def quiet_logs() -> None:
    for name in ("werkzeug", "botocore", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def die_once_after(monkeypatch, operation: str) -> list:
    """The one crash injector: the plugin's next successful EC2 ``operation``
    (such as "AllocateAddress") raises SystemExit once AWS has acted and before
    the plugin sees the answer, as a process that dies there would. Works for
    a workflow (the task fails) and for an operation called directly (the
    SystemExit propagates). Returns a list that holds True once it happened."""
    from ec2 import connection

    died: list = []
    create = connection._create_client

    def die_once(http_response, **_):
        if not died and http_response.status_code < 300:
            died.append(True)
            raise SystemExit(f"the plugin process died right after {operation}")

    def dying_client(settings):
        client = create(settings)
        client.meta.events.register(f"after-call.ec2.{operation}", die_once)
        return client

    monkeypatch.setattr(connection, "_create_client", dying_client)
    connection.clear_cache()
    return died


def refuse_release_while_associated(monkeypatch) -> None:
    """Makes the plugin's clients answer ReleaseAddress of an associated
    address with InvalidIPAddress.InUse, as EC2 does and moto does not."""
    from botocore.exceptions import ClientError

    from ec2 import connection

    create = connection._create_client

    def refuse(params, **_):
        client = create({"retry_mode": "standard", "max_attempts": 1})
        (address,) = client.describe_addresses(AllocationIds=[params["AllocationId"]])["Addresses"]
        if address.get("AssociationId"):
            error = {"Error": {"Code": "InvalidIPAddress.InUse", "Message": "in use"}}
            raise ClientError(error, "ReleaseAddress")

    def refusing_client(settings):
        client = create(settings)
        client.meta.events.register("provide-client-params.ec2.ReleaseAddress", refuse)
        return client

    monkeypatch.setattr(connection, "_create_client", refusing_client)
    connection.clear_cache()


def owned_by(ctx, resource_type: str, name: str | None = None) -> list[dict]:
    """TagSpecifications that mark a resource as made by ``ctx``'s node instance."""
    from ec2 import aws, utils

    return aws.tag_specifications(resource_type, utils.creation_tags(ctx, {}, name))


def interrupted_create(ctx) -> None:
    """Marks ``ctx``'s node instance as having begun a create that never finished."""
    ctx.instance.runtime_properties["create_started"] = True
