"""cloudify.aws.nodes.Instance: an EC2 instance through its whole lifecycle.

create (``run_instances``): validate the properties and build one RunInstances
request (image, type, ``parameters`` in boto 2 or boto3 spelling, key pair and
security groups from relationships and the provider context, user data with
the agent's init script, tags), adopt an instance an interrupted create left
behind, else run one with a stable ``ClientToken`` and record its id at once.
start: start it if stopped, wait until running, record its addresses. stop:
stop it, wait, forget the addresses. delete (``terminate``): terminate it, wait,
forget everything. An external instance is only checked and recorded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import botocore.session
from botocore.validate import ParamValidator
from cloudify import constants as cloudify_constants
from cloudify.decorators import operation
from cloudify.exceptions import NonRecoverableError, RecoverableError
from cloudify.utils import internal as cloudify_internal

from ec2 import constants, utils

KIND = "instance"
KEYPAIR_RELATIONSHIP = "cloudify.aws.relationships.instance_connected_to_keypair"
SECURITY_GROUP_RELATIONSHIP = "cloudify.aws.relationships.instance_connected_to_security_group"

IMAGE_ID_PATTERN = re.compile(r"^ami-[0-9a-f]{8,17}$")
INSTANCE_ID_PATTERN = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
INSTANCE_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
CLIENT_TOKEN_LIMIT = 64

# States in which an instance counts as existing (adoptable, startable, ...).
LIVE_STATES = ("pending", "running", "stopping", "stopped")
GONE_STATES = ("shutting-down", "terminated")
NOT_FOUND = "not-found"
# An instance between states refuses start and stop for a moment: retry later.
IN_TRANSITION = ("IncorrectInstanceState",)

# Every runtime property this module sets; delete pops them all.
RUNTIME_PROPERTIES = (
    constants.AWS_RESOURCE_ID,
    constants.EXTERNAL_RESOURCE,
    constants.RESERVATION_ID,
    *constants.INSTANCE_NETWORK_PROPERTIES,
)

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
BOTO2_LISTS = ("security_groups", "security_group_ids")
# RunInstances fields the plugin decides itself.
MANAGED_FIELDS = ("MinCount", "MaxCount", "DryRun")
LIST_FIELDS = ("SecurityGroups", "SecurityGroupIds")


# --- operations -------------------------------------------------------------


@operation(resumable=True)
def run_instances(ctx, **_):
    """create: runs one instance, or adopts the one this node instance owns."""
    check_external_relationships(ctx)
    client = utils.client_for(ctx.node)
    if utils.adopt_external(ctx, KIND, _external_finder(ctx, client)):
        return

    request = build_request(ctx)
    if _adopt_own(ctx, client):
        return

    instance, reservation_id = _run(ctx, client, request)
    instance_id = instance["InstanceId"]
    utils.record(
        ctx.instance,
        save=True,
        **{constants.AWS_RESOURCE_ID: instance_id, constants.RESERVATION_ID: reservation_id},
    )
    ctx.logger.info(f"Launched instance {instance_id} (reservation {reservation_id}) from {request['ImageId']}.")


@operation(resumable=True)
def start(ctx, **_):
    """Starts the instance if it is stopped, waits until it runs, records its addresses."""
    client = utils.client_for(ctx.node)
    instance_id = _recorded_id(ctx)
    instance = _describe(ctx, client, instance_id)
    state = _state(instance)
    if utils.use_external(ctx.node):
        if state == NOT_FOUND:
            raise _gone(ctx, instance_id)
        _record_addresses(ctx, instance)
        return
    if state == NOT_FOUND:
        # EC2 is eventually consistent: a new instance may not be visible yet.
        raise RecoverableError(
            f"{utils.node_label(ctx)}: instance {instance_id} is not visible yet; trying again.",
            retry_after=utils.wait_settings(ctx.node)[2],
        )
    if state in GONE_STATES:
        raise _gone(ctx, instance_id, state)

    if state == "stopping":
        instance = _wait(ctx, client, instance_id, "stopped")
        if instance is None:
            return
        state = _state(instance)
    if state == "stopped":
        utils.call(ctx, client, "start_instances", retry_codes=IN_TRANSITION, InstanceIds=[instance_id])
        ctx.logger.info(f"Starting instance {instance_id}.")
    if state != "running":
        instance = _wait(ctx, client, instance_id, "running", failed=GONE_STATES)
        if instance is None:
            return
    _record_addresses(ctx, instance)


@operation(resumable=True)
def stop(ctx, **_):
    """Stops the instance, waits until it is stopped, forgets its addresses.

    With no instance recorded (a failed or interrupted install), it stops the
    live instances tagged as this node instance's, if any, and otherwise only
    logs: uninstall must get through after any failed install.
    """
    if utils.use_external(ctx.node):
        utils.forget(ctx.instance, *constants.INSTANCE_NETWORK_PROPERTIES)
        ctx.logger.info("External instance: addresses forgotten; the instance is left as it is.")
        return
    client = utils.client_for(ctx.node)
    instance_ids = _own_instance_ids(ctx, client)
    if not instance_ids:
        ctx.logger.info("No instance was recorded or found for this node instance; there is nothing to stop.")
    for instance_id in instance_ids:
        state = _state(_describe(ctx, client, instance_id))
        if state in GONE_STATES or state == NOT_FOUND:
            ctx.logger.warning(f"Instance {instance_id} is {state}; there is nothing to stop.")
            continue
        if state not in ("stopping", "stopped"):
            utils.call(ctx, client, "stop_instances", retry_codes=IN_TRANSITION, InstanceIds=[instance_id])
            ctx.logger.info(f"Stopping instance {instance_id}.")
        if state != "stopped" and _wait(ctx, client, instance_id, "stopped", failed=GONE_STATES) is None:
            return
    utils.forget(ctx.instance, *constants.INSTANCE_NETWORK_PROPERTIES)


@operation(resumable=True)
def terminate(ctx, **_):
    """delete: terminates the instance, waits for termination, forgets it."""
    client = utils.client_for(ctx.node)
    if utils.release_external(
        ctx,
        KIND,
        _external_finder(ctx, client),
        constants.RESERVATION_ID,
        *constants.INSTANCE_NETWORK_PROPERTIES,
    ):
        return

    instance_ids = _own_instance_ids(ctx, client)
    if not instance_ids:
        ctx.logger.info("No instance was recorded or found for this node instance; there is nothing to terminate.")
    for instance_id in instance_ids:
        terminated = utils.call(ctx, client, "terminate_instances", not_found_ok=True, InstanceIds=[instance_id])
        if terminated is None:
            continue
        ctx.logger.info(f"Terminating instance {instance_id}.")
        if _wait(ctx, client, instance_id, ("terminated", NOT_FOUND)) is None:
            return
    utils.forget(ctx.instance, *RUNTIME_PROPERTIES)


@operation(resumable=True)
def creation_validation(ctx, **_):
    """Checks the image, the type, and any key pair or subnet named in parameters."""
    check_external_relationships(ctx)
    client = utils.client_for(ctx.node)
    if utils.use_external(ctx.node):
        instance_id = utils.require_external(ctx, KIND, _external_finder(ctx, client))
        ctx.logger.info(f"External instance {instance_id} exists.")
        return

    request = validate(ctx)
    named = utils.resource_id(ctx.node)
    if INSTANCE_ID_PATTERN.match(named) and _find(ctx, client, named):
        raise utils.bad_input(
            ctx,
            "resource_id",
            f"names instance '{named}', which already exists, while use_external_resource is false",
            "set use_external_resource to true to use that instance, or clear resource_id",
        )
    image_id = request["ImageId"]
    found = utils.call(ctx, client, "describe_images", not_found_ok=True, ImageIds=[image_id])
    images = (found or {}).get("Images", [])
    if not images:
        raise utils.bad_input(
            ctx,
            "image_id",
            f"names image '{image_id}', which is not available to this account and region",
            "give an AMI id that exists in the region (see DescribeImages)",
        )
    if images[0].get("State", "available") != "available":
        raise utils.bad_input(
            ctx,
            "image_id",
            f"names image '{image_id}', which is {images[0]['State']}",
            "give an AMI that is available",
        )
    key_name = request.get("KeyName")
    if key_name:
        found = utils.call(ctx, client, "describe_key_pairs", not_found_ok=True, KeyNames=[key_name])
        if not (found or {}).get("KeyPairs"):
            raise utils.bad_input(
                ctx,
                "parameters.key_name",
                f"names key pair '{key_name}', which does not exist",
                "create the key pair first, or connect the instance to a KeyPair node",
            )
    subnet_id = request.get("SubnetId")
    if subnet_id:
        found = utils.call(ctx, client, "describe_subnets", not_found_ok=True, SubnetIds=[subnet_id])
        if not (found or {}).get("Subnets"):
            raise utils.bad_input(
                ctx,
                "parameters.subnet_id",
                f"names subnet '{subnet_id}', which does not exist",
                "give the id of an existing subnet, or leave it out for the default VPC",
            )
    ctx.logger.info(f"Instance of {request['InstanceType']} from {image_id} is valid.")


@operation(resumable=True)
def check_status(ctx, **_):
    """Passes when the instance exists and is running; raises otherwise."""
    client = utils.client_for(ctx.node)
    external = utils.use_external(ctx.node)
    instance_id = ctx.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    if not instance_id and external:
        instance_id = utils.resource_id(ctx.node)
        _check_instance_id(ctx, instance_id)
    if not instance_id:
        raise NonRecoverableError(
            f"{utils.node_label(ctx)}: no instance is recorded; it was never created. "
            "Fix: run the install workflow, or the heal workflow for this node instance."
        )
    state = _state(_describe(ctx, client, instance_id))
    if state != "running":
        fix = (
            "start it in AWS, or correct resource_id"
            if external
            else "run the heal workflow to replace it, or run the start operation if it is stopped"
        )
        raise NonRecoverableError(
            f"{utils.node_label(ctx)}: instance {instance_id} is {state}, not running. Fix: {fix}."
        )
    ctx.logger.info(f"Instance {instance_id} is running.")


# --- the request --------------------------------------------------------------


def validate(ctx) -> dict[str, Any]:
    """Checks the properties without calling AWS; returns the RunInstances
    fields they give (image, type and ``parameters``, translated)."""
    utils.validate_tags(ctx)
    utils.validate_wait_settings(ctx)
    request = translate_parameters(ctx)
    for prop, field, fix in (
        ("image_id", "ImageId", "give the AMI id to launch, such as ami-0abc1234"),
        ("instance_type", "InstanceType", "give an instance type such as t3.micro"),
    ):
        value = str(ctx.node.properties.get(prop) or "").strip()
        given = request.get(field)
        if value and given and given != value:
            raise utils.bad_input(
                ctx, f"parameters.{prop}", f"is {given!r} while property '{prop}' is {value!r}", "set only one"
            )
        request[field] = value or given
        if not request[field]:
            raise utils.bad_input(ctx, prop, "is empty", f"{fix}, or set use_external_resource to true")
    if not IMAGE_ID_PATTERN.match(str(request["ImageId"])):
        raise utils.bad_input(
            ctx, "image_id", f"is {request['ImageId']!r}, not an AMI id", "give an id such as ami-0abc1234"
        )
    if not INSTANCE_TYPE_PATTERN.match(str(request["InstanceType"])):
        raise utils.bad_input(
            ctx,
            "instance_type",
            f"is {request['InstanceType']!r}, not an instance type",
            "give a family and a size, such as t3.micro or m5.large",
        )
    return request


def build_request(ctx) -> dict[str, Any]:
    """The complete RunInstances request for this node instance.

    Raises a ``NonRecoverableError`` naming the property and the fix for any
    bad input; nothing is called on AWS.
    """
    request = validate(ctx)
    request["MinCount"] = request["MaxCount"] = 1

    key_name = _key_name(ctx, request.get("KeyName"))
    if key_name:
        request["KeyName"] = key_name
    group_ids = _unique(_related_ids(ctx, SECURITY_GROUP_RELATIONSHIP) + request.get("SecurityGroupIds", []))
    agents_group = _provider_resource(ctx, "agents_security_group")
    if agents_group and agents_group not in group_ids:
        group_ids.append(agents_group)
    if group_ids:
        request["SecurityGroupIds"] = group_ids

    user_data = _user_data(ctx, request.get("UserData"))
    if user_data:
        request["UserData"] = user_data
    request["TagSpecifications"] = _tag_specifications(ctx, request.get("TagSpecifications", []))
    request.setdefault("ClientToken", client_token(ctx, request))

    report = ParamValidator().validate(request, _run_instances_shape())
    if report.has_errors():
        raise utils.bad_input(
            ctx,
            "parameters",
            f"does not make a valid RunInstances request:\n{report.generate_report()}",
            "correct the values named above",
        )
    return request


def translate_parameters(ctx) -> dict[str, Any]:
    """The ``parameters`` property as RunInstances fields.

    Accepts the classic plugin's boto 2 ``run_instances`` names (translated)
    and the boto3 RunInstances names (passed through).
    """
    parameters = ctx.node.properties.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise utils.bad_input(
            ctx, "parameters", f"is a {type(parameters).__name__}", "give a dictionary of RunInstances settings"
        )
    accepted = accepted_parameters()
    unknown = sorted(key for key in parameters if key not in accepted or key in MANAGED_FIELDS)
    if unknown:
        raise utils.bad_input(
            ctx,
            "parameters",
            f"has unknown key(s) {unknown}",
            f"use only these keys: {', '.join(k for k in accepted if k not in MANAGED_FIELDS)}",
        )

    request: dict[str, Any] = {}
    for key, value in parameters.items():
        if value is None:
            continue
        if key in BOTO2_LISTS:
            value = _string_list(ctx, key, value)
        if key in BOTO2_BOOLEANS:
            value = _boolean(ctx, key, value)
        if key in BOTO2_NESTED:
            field, member = BOTO2_NESTED[key]
            _merge(ctx, request, key, field, {member: value})
        elif key in BOTO2_FLAT:
            _merge(ctx, request, key, BOTO2_FLAT[key], value)
        else:
            _merge(ctx, request, key, key, value)
    return request


@functools.cache
def accepted_parameters() -> tuple[str, ...]:
    """Every key ``parameters`` accepts: boto 2 names, then boto3 names."""
    return (*BOTO2_FLAT, *BOTO2_NESTED, *_run_instances_shape().members)


@functools.cache
def _run_instances_shape():
    model = botocore.session.get_session().get_service_model("ec2")
    return model.operation_model("RunInstances").input_shape


def _merge(ctx, request: dict, key: str, field: str, value: Any) -> None:
    """Puts one translated value into the request; two spellings must agree."""
    if field in LIST_FIELDS:
        request[field] = _unique(request.get(field, []) + _string_list(ctx, key, value))
    elif isinstance(value, dict) and isinstance(request.get(field), dict):
        for member, inner in value.items():
            if member in request[field] and request[field][member] != inner:
                raise _conflict(ctx, key, f"{field}.{member}")
            request[field][member] = inner
    elif field in request and request[field] != value:
        raise _conflict(ctx, key, field)
    else:
        request[field] = dict(value) if isinstance(value, dict) else value


def _conflict(ctx, key: str, field: str) -> NonRecoverableError:
    return utils.bad_input(
        ctx,
        f"parameters.{key}",
        f"sets {field}, which another key of parameters sets differently",
        "give each setting once, in either spelling",
    )


def _string_list(ctx, key: str, value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(item, str) and item for item in values):
        raise utils.bad_input(ctx, f"parameters.{key}", f"is {value!r}", "give a list of names or ids")
    return list(values)


def _boolean(ctx, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise utils.bad_input(ctx, f"parameters.{key}", f"is {value!r}", "give true or false")


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def client_token(ctx, request: dict[str, Any]) -> str:
    """A RunInstances idempotency token for this node instance and this request.

    An identical request gets the same token, so AWS deduplicates a repeated
    call; a changed one (new tags, user data, ...) gets a new token, so AWS
    does not refuse it with IdempotentParameterMismatch.
    """
    canonical = json.dumps(
        {key: value for key, value in request.items() if key != "ClientToken"}, sort_keys=True, default=str
    )
    request_digest = hashlib.sha256(canonical.encode()).hexdigest()
    seed = f"{ctx.deployment.id}/{ctx.instance.id}/{request_digest}"
    return f"cloudify-{hashlib.sha256(seed.encode()).hexdigest()}"[:CLIENT_TOKEN_LIMIT]


# --- relationships and the provider context -------------------------------


def _related(ctx, relationship_type: str) -> list:
    """Relationships of the given type, or of a type derived from it."""
    found = []
    for relationship in ctx.instance.relationships:
        hierarchy = getattr(relationship, "type_hierarchy", None) or [relationship.type]
        if relationship_type in hierarchy:
            found.append(relationship)
    return found


def _related_ids(ctx, relationship_type: str) -> list[str]:
    ids = []
    for relationship in _related(ctx, relationship_type):
        target_id = relationship.target.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
        if not target_id:
            raise NonRecoverableError(
                f"{utils.node_label(ctx)}: the target '{relationship.target.node.id}' of its "
                f"{relationship.type} relationship has no aws_resource_id. Fix: make sure that node is installed."
            )
        ids.append(str(target_id))
    return ids


def check_external_relationships(ctx) -> None:
    """The reference page's rule for an external instance: each security group
    it is connected to must be external too; a new key pair only warrants a
    warning. Calls nothing on AWS."""
    if not utils.use_external(ctx.node):
        return
    for relationship in _related(ctx, SECURITY_GROUP_RELATIONSHIP):
        group = relationship.target.node.id
        if not utils.use_external(relationship.target.node):
            raise NonRecoverableError(
                f"{utils.node_label(ctx)}: it is an existing instance (use_external_resource is true), but its "
                f"{relationship.type} relationship targets '{group}', a security group Cloudify creates "
                "(use_external_resource is false); the plugin does not change an existing instance's groups. "
                f"Fix: make '{group}' external too (use_external_resource: true and its resource_id), "
                "or set use_external_resource to false on this node so that Cloudify creates the instance."
            )
    for relationship in _related(ctx, KEYPAIR_RELATIONSHIP):
        if not utils.use_external(relationship.target.node):
            ctx.logger.warning(
                f"{utils.node_label(ctx)}: it is an existing instance, connected to '{relationship.target.node.id}', "
                "a key pair Cloudify creates; the instance keeps the key it was launched with."
            )


def _key_name(ctx, from_parameters: str | None) -> str | None:
    """The key pair: a connected KeyPair node, else parameters, else the provider's agents keypair."""
    related = _related_ids(ctx, KEYPAIR_RELATIONSHIP)
    if len(related) > 1:
        raise NonRecoverableError(
            f"{utils.node_label(ctx)}: it has {len(related)} instance_connected_to_keypair relationships "
            f"({', '.join(related)}). Fix: connect the instance to one key pair only."
        )
    if related and from_parameters and related[0] != from_parameters:
        raise utils.bad_input(
            ctx,
            "parameters.key_name",
            f"is '{from_parameters}' but the connected key pair is '{related[0]}'",
            "remove key_name from parameters, or make it name the connected key pair",
        )
    return (related[0] if related else None) or from_parameters or _provider_resource(ctx, "agents_keypair")


def _provider_resource(ctx, name: str) -> str | None:
    """An id from the manager's provider context (resources.<name>.id), if any."""
    try:
        context = ctx.provider_context or {}
    except Exception:  # no manager, or one without a provider context
        return None
    resource = ((context.get("resources") or {}) if isinstance(context, dict) else {}).get(name) or {}
    value = resource.get("id") if isinstance(resource, dict) else None
    return str(value) if value else None


# --- user data and tags -------------------------------------------------------


def _user_data(ctx, user_data: str | None) -> str | None:
    """The user's user data, combined with the agent's init script if the agent installs that way."""
    if user_data is not None and not isinstance(user_data, str):
        raise utils.bad_input(ctx, "parameters.user_data", "is not text", "give the user data as plain text")
    install_method = cloudify_internal.get_install_method(ctx.node.properties)
    if install_method != cloudify_constants.AGENT_INSTALL_METHOD_INIT_SCRIPT:
        return user_data
    script = ctx.agent.init_script()
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


def _tag_specifications(ctx, extra: list) -> list[dict]:
    """The Name tag, the tags property and the ownership tags, plus any
    TagSpecifications given in parameters (instance tags merged in)."""
    (ours,) = utils.creation_tags(ctx, KIND, ctx.instance.id)
    if not isinstance(extra, list):
        raise utils.bad_input(ctx, "parameters.TagSpecifications", "is not a list", "give a list of specifications")
    others = []
    for spec in extra:
        if isinstance(spec, dict) and spec.get("ResourceType") == KIND:
            given = {tag["Key"]: tag for tag in spec.get("Tags", []) if isinstance(tag, dict) and "Key" in tag}
            keys = {tag["Key"] for tag in ours["Tags"]}
            ours["Tags"] = [tag for key, tag in given.items() if key not in keys] + ours["Tags"]
        else:
            others.append(spec)
    return [ours, *others]


# --- AWS ------------------------------------------------------------------------


def _run(ctx, client, request: dict) -> tuple[dict, str]:
    """Calls RunInstances. AWS answers a repeated ClientToken with the first
    call's instance; if that one is already gone (a reinstall), a token
    derived from it is used, so the answer stays reproducible."""
    for _attempt in range(5):
        response = utils.call(ctx, client, "run_instances", **request)
        instance = response["Instances"][0]
        if _state(instance) not in GONE_STATES:
            return instance, response.get("ReservationId", "")
        seed = f"{request['ClientToken']}/{instance['InstanceId']}"
        request["ClientToken"] = f"cloudify-{hashlib.sha256(seed.encode()).hexdigest()}"[:CLIENT_TOKEN_LIMIT]
        ctx.logger.info(f"Token matched instance {instance['InstanceId']}, which is gone; launching a new one.")
    raise NonRecoverableError(f"{utils.node_label(ctx)}: RunInstances kept answering with terminated instances.")


def _adopt_own(ctx, client) -> bool:
    """Keeps the recorded instance, or adopts one an interrupted create launched."""
    recorded = ctx.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    if recorded:
        if _state(_describe(ctx, client, recorded)) in LIVE_STATES:
            ctx.logger.info(f"Instance {recorded} was already created for this node instance.")
            return True
        utils.forget(ctx.instance, *RUNTIME_PROPERTIES)
    found = _own_live_instances(ctx, client)
    if not found:
        return False
    instance = found[0]
    utils.record(
        ctx.instance,
        save=True,
        **{constants.AWS_RESOURCE_ID: instance["InstanceId"], constants.RESERVATION_ID: instance["ReservationId"]},
    )
    ctx.logger.warning(f"Adopted instance {instance['InstanceId']}, launched by an interrupted create.")
    return True


def _own_live_instances(ctx, client) -> list[dict]:
    """Non-terminated instances tagged as this node instance's, oldest first."""
    live = [{"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
    reservations = utils.find_own(ctx, client, "describe_instances", "Reservations", extra_filters=live)
    instances = [
        {**instance, "ReservationId": reservation["ReservationId"]}
        for reservation in reservations
        for instance in reservation["Instances"]
    ]
    return sorted(instances, key=lambda instance: str(instance.get("LaunchTime", "")))


def _own_instance_ids(ctx, client) -> list[str]:
    """The recorded instance, or else the live instances tagged as this node
    instance's: an interrupted create may have launched one it never recorded."""
    recorded = ctx.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    if recorded:
        return [str(recorded)]
    return [instance["InstanceId"] for instance in _own_live_instances(ctx, client)]


def _describe(ctx, client, instance_id: str) -> dict | None:
    found = utils.call(ctx, client, "describe_instances", not_found_ok=True, InstanceIds=[instance_id])
    instances = [i for r in (found or {}).get("Reservations", []) for i in r["Instances"]]
    return instances[0] if instances else None


def _state(instance: dict | None) -> str:
    return instance["State"]["Name"] if instance else NOT_FOUND


def _find(ctx, client, instance_id: str) -> str | None:
    """The id of an existing, non-terminated instance."""
    return instance_id if _state(_describe(ctx, client, instance_id)) in LIVE_STATES else None


def _check_instance_id(ctx, instance_id: str) -> None:
    """An external resource_id must look like an instance id before AWS is asked."""
    if not INSTANCE_ID_PATTERN.match(instance_id):
        raise utils.bad_input(
            ctx,
            "resource_id",
            f"is {instance_id!r}, not an instance id",
            "give the existing instance's id: 'i-' and 8 or 17 hexadecimal digits, such as i-0123456789abcdef0",
        )


def _external_finder(ctx, client):
    """What the shared external-resource helpers call to find resource_id."""

    def find(wanted: str) -> str | None:
        _check_instance_id(ctx, wanted)
        return _find(ctx, client, wanted)

    return find


def _wait(ctx, client, instance_id: str, wanted, failed=()) -> dict | None:
    """Waits with the shared policy; returns the last describe's instance, or
    None when the operation has asked the workflow to retry."""
    latest: dict[str, Any] = {}

    def poll() -> str:
        latest["instance"] = _describe(ctx, client, instance_id)
        return _state(latest["instance"])

    done = utils.wait_for(ctx, ctx.node, f"instance {instance_id}", poll, wanted, failed)
    return (latest["instance"] or {}) if done else None


def _recorded_id(ctx) -> str:
    instance_id = ctx.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    if not instance_id:
        raise NonRecoverableError(
            f"{utils.node_label(ctx)}: no instance is recorded (runtime property aws_resource_id). "
            "Fix: run the create operation (install) first."
        )
    return instance_id


def _gone(ctx, instance_id: str, state: str = NOT_FOUND) -> NonRecoverableError:
    return NonRecoverableError(
        f"{utils.node_label(ctx)}: instance {instance_id} is {state}. Fix: run the heal workflow "
        "to replace it, or correct resource_id for an external instance."
    )


def _record_addresses(ctx, instance: dict) -> None:
    """Records the four address properties from one describe's instance."""
    utils.record(
        ctx.instance,
        ip=instance.get("PrivateIpAddress"),
        private_dns_name=instance.get("PrivateDnsName"),
        public_dns_name=instance.get("PublicDnsName"),
        public_ip_address=instance.get("PublicIpAddress"),
    )
    ctx.logger.info(
        f"Instance {instance['InstanceId']} is running at {instance.get('PrivateIpAddress')} "
        f"(public {instance.get('PublicIpAddress') or 'none'})."
    )
