"""The RunInstances request of a cloudify.aws.nodes.Instance node.

Built from ``image_id``, ``instance_type`` and ``parameters`` (boto 2 or boto3
spelling), the key pair and security groups of its relationships and of the
provider context, the user data (with the agent's init script) and the tags.
Everything is checked here, before any AWS call: a bad value raises
``BadInput``, naming the property and the fix. An operation reads what its
ctx says once (``read``, an ``InstanceContext``) and hands that down.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

from botocore.validate import ParamValidator
from cloudify import constants as cloudify_constants
from cloudify.utils import internal as cloudify_internal

from ec2 import agent, aws, connection, constants, ownership, utils
from ec2.constants import GROUP_ID_PATTERN, IMAGE_ID_PATTERN, INSTANCE_ID_PATTERN
from ec2.errors import BadInput, PluginError
from ec2.properties import as_bool, as_text, string_list

KEYPAIR_RELATIONSHIP = "cloudify.aws.relationships.instance_connected_to_keypair"
SECURITY_GROUP_RELATIONSHIP = "cloudify.aws.relationships.instance_connected_to_security_group"

CLIENT_TOKEN_LIMIT = 64

# The classic plugin's boto 2 run_instances names: flat RunInstances fields ...
BOTO2_FLAT = {
    "image_id": "ImageId",
    "instance_type": "InstanceType",
    "key_name": "KeyName",
    "security_groups": "SecurityGroups",
    "security_group_ids": "SecurityGroupIds",
    "user_data": "UserData",
    "subnet_id": "SubnetId",
    "private_ip_address": "PrivateIpAddress",
    "ebs_optimized": "EbsOptimized",
    "disable_api_termination": "DisableApiTermination",
    "instance_initiated_shutdown_behavior": "InstanceInitiatedShutdownBehavior",
    "kernel_id": "KernelId",
    "ramdisk_id": "RamdiskId",
    "additional_info": "AdditionalInfo",
    "client_token": "ClientToken",
}
# ... and those that become a member of a nested RunInstances structure.
BOTO2_NESTED = {
    "placement": ("Placement", "AvailabilityZone"),
    "placement_group": ("Placement", "GroupName"),
    "tenancy": ("Placement", "Tenancy"),
    "instance_profile_name": ("IamInstanceProfile", "Name"),
    "instance_profile_arn": ("IamInstanceProfile", "Arn"),
    "monitoring_enabled": ("Monitoring", "Enabled"),
}
BOTO2_BOOLEANS = ("ebs_optimized", "disable_api_termination", "monitoring_enabled")
# RunInstances fields the plugin decides itself.
MANAGED_FIELDS = ("MinCount", "MaxCount", "DryRun")
LIST_FIELDS = ("SecurityGroups", "SecurityGroupIds")


# --- what the operation knows -------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A relationship's target node instance, as the instance's request needs it."""

    relationship: str  # the relationship's type
    types: tuple[str, ...]  # the relationship's type hierarchy
    node_id: str
    node_type: str | None  # this plugin's node type of the target, if it is one
    properties: Mapping[str, Any]
    instance_id: str
    runtime_properties: Mapping[str, Any]
    aws_id: str = ""  # its recorded id; before install, what stands in for it (see ec2.instance)
    placeholder: bool = False  # aws_id stands in for a key pair or group not created yet

    def of(self, relationship_type: str) -> bool:
        return relationship_type in self.types


@dataclass(frozen=True)
class InstanceContext:
    """What the Instance's request and checks need from the operation's ctx,
    read once by ``read``: plain values, but for the agent's init script."""

    deployment_id: str
    node_id: str
    instance_id: str
    properties: Mapping[str, Any]
    targets: tuple[Target, ...]
    ownership: Mapping[str, str]  # the ownership tags
    provider_resources: Mapping[str, str]  # ids in the manager's provider context, by resource name
    # The agent's init script, asked for only when the request is built: generating it has effects.
    agent_script: Callable[[], str | None]
    # What the install workflow will meet (validation only): the engine, the workflow, an agent to install.
    local: bool = False
    workflow: str | None = None
    installs_agent: bool = True

    @property
    def label(self) -> str:
        return f"node '{self.node_id}'"

    def related(self, relationship_type: str) -> list[Target]:
        """Targets of relationships of the given type, or of a type derived from it."""
        return [target for target in self.targets if target.of(relationship_type)]

    def targets_fresh_for(self, window: float) -> float:
        """The longest propagation window left among the targets this plugin created."""
        return utils.freshest((target.runtime_properties for target in self.targets if target.node_type), window)


def read(ctx, validating: bool = False, agent_script: str | None = None) -> InstanceContext:
    """What an Instance operation's ctx says, once. ``validating`` (before
    install): the agent's init script is a stand-in, and the engine's facts for
    ``agent.verdict`` are read. ``agent_script`` replaces the agent's own."""
    script = agent_script or (AGENT_SCRIPT_STAND_IN if validating else None)
    try:
        provider_context = ctx.provider_context
    except Exception:  # no manager, or one without a provider context
        provider_context = None
    known = InstanceContext(
        deployment_id=str(ctx.deployment.id),
        node_id=ctx.node.id,
        instance_id=ctx.instance.id,
        properties=ctx.node.properties,
        targets=tuple(
            Target(
                relationship=relationship.type,
                types=tuple(getattr(relationship, "type_hierarchy", None) or [relationship.type]),
                node_id=relationship.target.node.id,
                node_type=utils.plugin_node_type(relationship.target.node),
                properties=relationship.target.node.properties,
                instance_id=relationship.target.instance.id,
                runtime_properties=dict(relationship.target.instance.runtime_properties),
                aws_id=str(relationship.target.instance.runtime_properties.get(constants.AWS_RESOURCE_ID) or ""),
            )
            for relationship in ctx.instance.relationships
        ),
        ownership=ownership.owner_tags(ctx.deployment.id, ctx.instance.id),
        provider_resources=provider_resources(provider_context),
        agent_script=(lambda: script) if script else (lambda: ctx.agent.init_script()),
    )
    if not validating:
        return known
    return replace(
        known,
        local=utils.runs_locally(ctx),
        workflow=utils.workflow_id(ctx),
        installs_agent=utils.maps_operation(ctx, agent.AGENT_CREATE),
    )


# --- the properties ---------------------------------------------------------


@dataclass(frozen=True)
class InstanceSpec:
    common: utils.Common
    fields: dict[str, Any]  # RunInstances fields from image_id, instance_type and parameters; empty if external
    launch_dry_run: bool = True  # validation.create dry-runs the RunInstances request


def parse(properties: Mapping[str, Any]) -> InstanceSpec:
    """The Instance properties, checked without calling AWS."""
    common = utils.parse_common(properties)
    launch_dry_run = as_bool(properties.get("launch_dry_run", True), "launch_dry_run")
    if common.external:
        check_instance_id(common.resource_id, "resource_id")
        return InstanceSpec(common, {}, launch_dry_run)
    request = translate_parameters(properties.get("parameters"))
    for prop, field, fix in (
        ("image_id", "ImageId", "give the AMI id to launch, such as ami-0abc1234"),
        ("instance_type", "InstanceType", "give an instance type such as t3.micro"),
    ):
        value = as_text(properties.get(prop))
        given = request.get(field)
        if value and given and given != value:
            raise BadInput(f"parameters.{prop}", f"is {given!r} while property '{prop}' is {value!r}", "set only one")
        request[field] = value or given
        if not request[field]:
            raise BadInput(prop, "is empty", f"{fix}, or set use_external_resource to true")
    if not IMAGE_ID_PATTERN.match(str(request["ImageId"])):
        raise BadInput("image_id", f"is {request['ImageId']!r}, not an AMI id", "give an id such as ami-0abc1234")
    if request["InstanceType"] not in instance_types():
        raise BadInput(
            "instance_type",
            f"is {request['InstanceType']!r}, not an EC2 instance type",
            "give a family and a size that EC2 offers, such as t3.micro or m5.large",
        )
    return InstanceSpec(common, request, launch_dry_run)


def check_instance_id(instance_id: str, prop: str) -> None:
    """An instance id must look like one before AWS is asked about it."""
    if instance_id and not INSTANCE_ID_PATTERN.match(instance_id):
        raise BadInput(
            prop,
            f"is {instance_id!r}, not an instance id",
            "give the existing instance's id: 'i-' and 8 or 17 hexadecimal digits, such as i-0123456789abcdef0",
        )


def check_recorded_id(instance_id: str) -> None:
    """A recorded instance id that is not one fails at once, instead of being retried as "not visible yet"."""
    if not INSTANCE_ID_PATTERN.match(instance_id):
        raise PluginError(
            f"its runtime property aws_resource_id is {instance_id!r}, which is not an instance id. Fix: correct "
            "that runtime property (or reinstall the node instance)"
        )


@functools.cache
def instance_types() -> frozenset[str]:
    """Every instance type botocore's EC2 service model lists."""
    return frozenset(connection.ec2_service_model().shape_for("InstanceType").enum)


# --- security groups named in parameters -------------------------------------


def resolve_security_groups(client, spec: InstanceSpec, fresh_for: float = 0.0) -> InstanceSpec:
    """The spec with ``parameters.security_groups`` (the classic plugin's group
    names) moved into SecurityGroupIds: each name is looked up in the
    instance's own VPC (its subnet's, else the default VPC); ids pass through.
    EC2 takes names only for the default VPC, so ids are always sent. While
    ``fresh_for`` lasts, names not listed yet are looked up again."""
    wanted = spec.fields.get("SecurityGroups")
    if not wanted:
        return spec
    fields = {key: value for key, value in spec.fields.items() if key != "SecurityGroups"}
    names = [group for group in wanted if not GROUP_ID_PATTERN.match(group)]
    resolved: dict[str, str] = {}
    if names:
        vpc_id, where = _own_vpc(client, fields.get("SubnetId"), names)
        groups = aws.until_found(
            lambda: aws.find_security_groups_by_names(client, names, vpc_id),
            fresh_for,
            "a listing of security groups by name",
            lambda found: set(names) <= {group["GroupName"] for group in found},
        )
        resolved = {group["GroupName"]: group["GroupId"] for group in groups}
        missing = [name for name in names if name not in resolved]
        if missing:
            raise _unresolved_groups(client, missing, where)
    ids = [resolved.get(group, group) for group in wanted]
    fields["SecurityGroupIds"] = _unique(fields.get("SecurityGroupIds", []) + ids)
    return replace(spec, fields=fields)


def _own_vpc(client, subnet_id: str | None, names: list[str]) -> tuple[str, str]:
    """(VPC id, how to name it) of the VPC the instance is launched in."""
    if subnet_id:
        vpc_id = aws.subnet_vpc_id(client, subnet_id)
        if not vpc_id:
            raise BadInput(
                "parameters.subnet_id",
                f"names subnet '{subnet_id}', which does not exist",
                "give the id of an existing subnet, or leave it out for the default VPC",
            )
        return vpc_id, f"VPC {vpc_id} (of subnet {subnet_id})"
    vpc_id = aws.default_vpc_id(client)
    if not vpc_id:
        raise BadInput(
            "parameters.security_groups",
            f"names security group(s) {_quoted(names)}, but there is no VPC to look them up in: "
            "parameters.subnet_id is not given and the region has no default VPC",
            "give parameters.subnet_id, or give the groups' ids in parameters.security_group_ids",
        )
    return vpc_id, f"the default VPC {vpc_id}"


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def _unresolved_groups(client, missing: list[str], where: str) -> BadInput:
    """The error for group names not found in the instance's VPC: says where groups of those names are."""
    elsewhere: dict[str, set[str]] = {}
    for group in aws.find_security_groups_by_names(client, missing):
        elsewhere.setdefault(group["GroupName"], set()).add(group.get("VpcId") or "no VPC")
    found = "; ".join(f"'{name}' is in {', '.join(sorted(elsewhere[name]))}" for name in missing if name in elsewhere)
    names = _quoted(missing)
    if found:
        return BadInput(
            "parameters.security_groups",
            f"names security group(s) {names}, not found in {where}; {found}",
            "give parameters.subnet_id a subnet of the VPC whose group is meant, or give that group's id "
            "in parameters.security_group_ids",
        )
    return BadInput(
        "parameters.security_groups",
        f"names security group(s) {names}, not found in {where} nor in any other VPC of this region",
        "correct the name, or create the group in the instance's VPC before the instance (a SecurityGroup node "
        "it depends on: depends_on or instance_connected_to_security_group orders it)",
    )


# --- the request --------------------------------------------------------------


def build_request(known: InstanceContext, spec: InstanceSpec) -> dict[str, Any]:
    """The complete RunInstances request for this node instance.

    Raises ``BadInput`` naming the property and the fix for any bad input;
    nothing is called on AWS.
    """
    request: dict[str, Any] = {
        key: (dict(value) if isinstance(value, dict) else value) for key, value in spec.fields.items()
    }
    request["MinCount"] = request["MaxCount"] = 1

    key_name = _key_name(known, request.get("KeyName"))
    if key_name:
        request["KeyName"] = key_name
    group_ids = _unique(_related_ids(known, SECURITY_GROUP_RELATIONSHIP) + request.get("SecurityGroupIds", []))
    agents_group = known.provider_resources.get("agents_security_group")
    if agents_group and agents_group not in group_ids:
        group_ids.append(agents_group)
    if group_ids:
        request["SecurityGroupIds"] = group_ids

    user_data = _user_data(known, request.get("UserData"))
    if user_data:
        request["UserData"] = user_data
    metadata = request.get("MetadataOptions")
    if metadata is None or (isinstance(metadata, dict) and "HttpTokens" not in metadata):
        request["MetadataOptions"] = {**(metadata or {}), "HttpTokens": "required"}  # IMDSv2 unless told otherwise
    request["TagSpecifications"] = _tag_specifications(known, spec.common.tags, request.get("TagSpecifications", []))
    request.setdefault("ClientToken", client_token(known, request))

    report = ParamValidator().validate(request, _run_instances_shape())
    if report.has_errors():
        raise BadInput(
            "parameters",
            f"does not make a valid RunInstances request:\n{report.generate_report()}",
            "correct the values named above",
        )
    return request


def translate_parameters(parameters: Any) -> dict[str, Any]:
    """The ``parameters`` property as RunInstances fields.

    Accepts the classic plugin's boto 2 ``run_instances`` names (translated)
    and the boto3 RunInstances names (passed through).
    """
    parameters = parameters or {}
    if not isinstance(parameters, dict):
        raise BadInput("parameters", f"is a {type(parameters).__name__}", "give a dictionary of RunInstances settings")
    accepted = accepted_parameters()
    unknown = sorted(key for key in parameters if key not in accepted or key in MANAGED_FIELDS)
    if unknown:
        raise BadInput(
            "parameters",
            f"has unknown key(s) {unknown}",
            f"use only these keys: {', '.join(k for k in accepted if k not in MANAGED_FIELDS)}",
        )

    request: dict[str, Any] = {}
    for key, value in parameters.items():
        if value is None:
            continue
        if key in BOTO2_BOOLEANS:
            value = as_bool(value, f"parameters.{key}")
        if key in BOTO2_NESTED:
            field, member = BOTO2_NESTED[key]
            _merge(request, key, field, {member: value})
        elif key in BOTO2_FLAT:
            _merge(request, key, BOTO2_FLAT[key], value)
        else:
            _merge(request, key, key, value)
    return request


@functools.cache
def accepted_parameters() -> tuple[str, ...]:
    """Every key ``parameters`` accepts: boto 2 names, then boto3 names."""
    return (*BOTO2_FLAT, *BOTO2_NESTED, *_run_instances_shape().members)


@functools.cache
def _run_instances_shape():
    return connection.ec2_service_model().operation_model("RunInstances").input_shape


def _merge(request: dict, key: str, field: str, value: Any) -> None:
    """Puts one translated value into the request; two spellings must agree."""
    if field in LIST_FIELDS:
        request[field] = _unique(request.get(field, []) + string_list(value, f"parameters.{key}"))
    elif isinstance(value, dict) and isinstance(request.get(field), dict):
        for member, inner in value.items():
            if member in request[field] and request[field][member] != inner:
                raise _conflict(key, f"{field}.{member}")
            request[field][member] = inner
    elif field in request and request[field] != value:
        raise _conflict(key, field)
    else:
        request[field] = dict(value) if isinstance(value, dict) else value


def _conflict(key: str, field: str) -> BadInput:
    return BadInput(
        f"parameters.{key}",
        f"sets {field}, which another key of parameters sets differently",
        "give each setting once, in either spelling",
    )


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def client_token(known: InstanceContext, request: dict[str, Any]) -> str:
    """A RunInstances idempotency token for this node instance and this request.

    An identical request gets the same token, so AWS deduplicates a repeated
    call; a changed one (new tags, user data, ...) gets a new token, so AWS
    does not refuse it with IdempotentParameterMismatch.
    """
    canonical = json.dumps(
        {key: value for key, value in request.items() if key != "ClientToken"}, sort_keys=True, default=str
    )
    request_digest = hashlib.sha256(canonical.encode()).hexdigest()
    return token_from(f"{known.deployment_id}/{known.instance_id}/{request_digest}")


def token_from(seed: str) -> str:
    """A ClientToken (at most 64 ASCII characters) derived from a seed."""
    return f"cloudify-{hashlib.sha256(seed.encode()).hexdigest()}"[:CLIENT_TOKEN_LIMIT]


# --- the launch's dry run, once per node and request shape ---------------------

# Dry runs of RunInstances that passed, per client (region, endpoint and
# credentials) and (deployment, node, request shape): the instances of a node
# whose validations run in one process (the local engine) share one dry run.
LAUNCH_DRY_RUN_SECONDS = 300
LAUNCH_DRY_RUN_MEMO_SIZE = 256
_passed_launch_dry_runs = aws.RecentAnswers(LAUNCH_DRY_RUN_SECONDS, LAUNCH_DRY_RUN_MEMO_SIZE)
INSTANCE_ID_STAND_IN = "{node instance}"
# What a dry run sends instead of the agent's init script: generating the real
# one has effects, and only its presence matters to AWS.
AGENT_SCRIPT_STAND_IN = "#!/bin/sh\n# stands in for the Cloudify agent's init script in a dry run\n"


def dry_run_launch(known: InstanceContext, logger, client, request: dict[str, Any], fresh_for: float = 0.0):
    """``aws.dry_run_run_instances`` for this node instance's request, unless
    the same request shape of the same node passed its dry run in this process
    less than ``LAUNCH_DRY_RUN_SECONDS`` ago. A refusal is never kept: the
    next node instance asks AWS again."""
    key = (known.deployment_id, str(known.node_id), request_shape(request, known.instance_id))
    asked = []

    def ask():
        asked.append(True)
        return aws.dry_run_run_instances(client, request, fresh_for)

    refusal = _passed_launch_dry_runs.answer(client, key, ask, lambda refused: refused is None)
    if not asked:
        logger.info(
            f"{known.label}: this RunInstances request (but for the node instance id) passed its dry "
            "run a moment ago in this process; not sent again."
        )
    return refusal


def request_shape(request: Mapping[str, Any], instance_id: str) -> str:
    """The request as text, without what differs between the node instances of
    one node: the ClientToken, and the node instance id in tag values (the
    Name tag and the ownership tag)."""
    shaped = {key: value for key, value in request.items() if key != "ClientToken"}
    specifications = []
    for specification in shaped.get("TagSpecifications", []):
        tags = specification.get("Tags", []) if isinstance(specification, dict) else []
        specifications.append(
            {
                **specification,
                "Tags": [
                    {**tag, "Value": INSTANCE_ID_STAND_IN} if tag.get("Value") == instance_id else tag for tag in tags
                ],
            }
            if tags
            else specification
        )
    if specifications:
        shaped["TagSpecifications"] = specifications
    return json.dumps(shaped, sort_keys=True, default=str)


# --- relationships and the provider context -------------------------------


def _related_ids(known: InstanceContext, relationship_type: str) -> list[str]:
    ids = []
    for target in known.related(relationship_type):
        if not target.aws_id:
            raise PluginError(
                f"the target '{target.node_id}' of its {target.relationship} relationship has no "
                "aws_resource_id. Fix: make sure that node is installed"
            )
        ids.append(target.aws_id)
    return ids


def check_external_relationships(known: InstanceContext, logger) -> None:
    """The reference page's rule for an external instance: each security group
    it is connected to must be external too; a new key pair only warrants a
    warning. Calls nothing on AWS."""
    if not utils.use_external(known):
        return
    for target in known.related(SECURITY_GROUP_RELATIONSHIP):
        group = target.node_id
        if not utils.use_external(target):
            raise PluginError(
                f"it is an existing instance (use_external_resource is true), but its "
                f"{target.relationship} relationship targets '{group}', a security group Cloudify creates "
                "(use_external_resource is false); the plugin does not change an existing instance's groups. "
                f"Fix: make '{group}' external too (use_external_resource: true and its resource_id), "
                "or set use_external_resource to false on this node so that Cloudify creates the instance"
            )
    for target in known.related(KEYPAIR_RELATIONSHIP):
        if not utils.use_external(target):
            logger.warning(
                f"{known.label}: it is an existing instance, connected to '{target.node_id}', "
                "a key pair Cloudify creates; the instance keeps the key it was launched with."
            )


def _key_name(known: InstanceContext, from_parameters: str | None) -> str | None:
    """The key pair: a connected KeyPair node, else parameters, else the provider's agents keypair."""
    related = _related_ids(known, KEYPAIR_RELATIONSHIP)
    if len(related) > 1:
        raise PluginError(
            f"it has {len(related)} instance_connected_to_keypair relationships "
            f"({', '.join(related)}). Fix: connect the instance to one key pair only"
        )
    if related and from_parameters and related[0] != from_parameters:
        raise BadInput(
            "parameters.key_name",
            f"is '{from_parameters}' but the connected key pair is '{related[0]}'",
            "remove key_name from parameters, or make it name the connected key pair",
        )
    return (related[0] if related else None) or from_parameters or known.provider_resources.get("agents_keypair")


def provider_resources(context: Any) -> dict[str, str]:
    """The ids in the manager's provider context (resources.<name>.id), by name; none without one."""
    resources = (context.get("resources") or {}) if isinstance(context, dict) else {}
    ids = {}
    for name, resource in resources.items() if isinstance(resources, dict) else ():
        value = resource.get("id") if isinstance(resource, dict) else None
        if value:
            ids[str(name)] = str(value)
    return ids


# --- user data and tags -------------------------------------------------------


def _user_data(known: InstanceContext, user_data: str | None) -> str | None:
    """The user's user data, combined with the agent's init script if the agent installs that way."""
    if user_data is not None and not isinstance(user_data, str):
        raise BadInput("parameters.user_data", "is not text", "give the user data as plain text")
    install_method = cloudify_internal.get_install_method(known.properties)
    if install_method not in cloudify_constants.AGENT_INSTALL_METHODS_SCRIPTS:
        return user_data
    script = known.agent_script()
    if not script:
        return user_data
    if not user_data:
        return script
    return multipart_user_data(user_data, script)


def multipart_user_data(*parts: str) -> str:
    """Combines user data parts into one multipart MIME document for cloud-init."""
    # A boundary made from the parts, not a random one: the same user data must
    # give the same request, and so the same ClientToken.
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    message = MIMEMultipart(boundary=f"==============={digest[:32]}==")
    for part in parts:
        charset = "us-ascii" if part.isascii() else "utf-8"
        message.attach(MIMEText(part, _subtype=_cloud_init_subtype(part), _charset=charset))
    return message.as_string()


def _cloud_init_subtype(part: str) -> str:
    first_line = part.lstrip().split("\n", 1)[0]
    for prefix, subtype in (
        ("#!", "x-shellscript"),
        ("#cloud-config", "cloud-config"),
        ("#include", "x-include-url"),
        ("#cloud-boothook", "cloud-boothook"),
        ("#part-handler", "part-handler"),
        ("#upstart-job", "upstart-job"),
    ):
        if first_line.startswith(prefix):
            return subtype
    return "x-shellscript"


def _tag_specifications(known: InstanceContext, tags: Mapping[str, str], extra: list) -> list[dict]:
    """The Name tag, the tags property and the ownership tags, plus any
    TagSpecifications given in parameters (instance tags merged in)."""
    (ours,) = aws.tag_specifications("instance", {"Name": known.instance_id, **tags, **known.ownership})
    if not isinstance(extra, list):
        raise BadInput("parameters.TagSpecifications", "is not a list", "give a list of specifications")
    others = []
    for spec in extra:
        if isinstance(spec, dict) and spec.get("ResourceType") == "instance":
            given = {tag["Key"]: tag for tag in spec.get("Tags", []) if isinstance(tag, dict) and "Key" in tag}
            keys = {tag["Key"] for tag in ours["Tags"]}
            ours["Tags"] = [tag for key, tag in given.items() if key not in keys] + ours["Tags"]
        else:
            others.append(spec)
    return [ours, *others]
