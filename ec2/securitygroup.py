"""cloudify.aws.nodes.SecurityGroup: a VPC security group and its rules.

create: parse every rule, resolve the source groups they name (by id, or by
name in the group's own VPC), create the group (in ``vpc_id`` or the default
VPC) with its tags, then authorise all rules in one call each for ingress and
egress. If authorising fails, the group is deleted again. delete: remove the
group, retrying while instances that use it are still being torn down.
"""

from __future__ import annotations

from dataclasses import dataclass

from ec2 import aws, connection, constants, deployment, errors, ownership, utils
from ec2.constants import GROUP_ID_PATTERN, VPC_ID_PATTERN
from ec2.errors import BadInput
from ec2.properties import as_text
from ec2.rules import Rule, parse_rules

KIND = "security group"


@dataclass(frozen=True)
class SecurityGroupSpec:
    common: utils.Common
    name: str
    description: str
    vpc_id: str
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]


# --- operations -------------------------------------------------------------


@utils.ec2_operation
def create(ctx, **_):
    node = utils.node_facts(ctx, with_targets=True)
    spec = parse(node)
    client = connection.ec2_client(spec.common.aws_config)
    if spec.common.external:
        utils.adopt_external(
            ctx.instance, ctx.logger.info, spec.common, KIND, lambda wanted: _find(client, wanted, spec.vpc_id)
        )
        return

    window = spec.common.propagation
    # A source group named in a rule may be a target's, made a moment ago.
    ingress, egress = resolve_rules(client, spec, node.targets_fresh_for(window))
    owner = ownership.owner_tags(ctx.deployment.id, ctx.instance.id)
    rerun = ownership.may_exist(ctx.instance.runtime_properties)
    if rerun:  # after an interrupted create: start afresh
        _delete_own_groups(client, ctx.instance, owner, window, ctx.logger.info)
    utils.mark_create_started(ctx.instance)
    tags = ownership.creation_tags(owner, spec.common.tags, spec.name)
    group_id = _create_once(client, owner, spec, tags, ctx.logger.warning, rerun)
    utils.record(ctx.instance, save=True, **{constants.AWS_RESOURCE_ID: group_id, constants.CREATED_AT: utils.now()})
    try:  # the new group may be unknown to EC2 for a moment
        if ingress:
            aws.authorize(client, group_id, ingress, fresh_for=window)
        if egress:
            aws.authorize(client, group_id, egress, egress=True, fresh_for=window)
    except Exception:
        ctx.logger.error(f"Authorising the rules of {group_id} failed; deleting the group again.")
        try:
            _delete_own_groups(client, ctx.instance, owner, window, ctx.logger.info)
        except Exception as cleanup_error:
            ctx.logger.error(f"Could not delete {group_id} ({cleanup_error}); it stays recorded for uninstall.")
        raise
    ctx.logger.info(
        f"Created security group {spec.name} ({group_id}) with {len(ingress)} ingress and {len(egress)} egress rules."
    )


@utils.ec2_operation
def delete(ctx, **_):
    common = utils.common_if_created(ctx.node.properties, ctx.instance.runtime_properties, KIND, ctx.logger.info)
    if common is None:
        return
    client = connection.ec2_client(common.aws_config)
    if common.external:
        vpc_id = as_text(ctx.node.properties.get("vpc_id"))
        utils.release_external(
            ctx.instance, ctx.logger.info, common, KIND, lambda wanted: _find(client, wanted, vpc_id)
        )
        return
    owner = ownership.owner_tags(ctx.deployment.id, ctx.instance.id)
    _delete_own_groups(client, ctx.instance, owner, common.propagation, ctx.logger.info)
    utils.forget(ctx.instance, constants.CREATE_STARTED)


@utils.ec2_operation
def creation_validation(ctx, **_):
    check(utils.node_facts(ctx, with_targets=True), ctx.logger.info)
    deployment.check_deployment_quotas(ctx)


def check(node: utils.NodeFacts, report: ownership.Report) -> None:
    """validation.create's checks, plain: the aws_preflight workflow runs them too."""
    spec = parse(node)
    client = connection.ec2_client(spec.common.aws_config)
    if spec.vpc_id and not aws.vpc_exists(client, spec.vpc_id):
        raise BadInput("vpc_id", f"names VPC '{spec.vpc_id}', which does not exist", "give an existing VPC's id")
    owner = node.owner
    utils.check_existence(
        spec.common,
        KIND,
        lambda wanted: (
            _find(client, wanted, spec.vpc_id) if spec.common.external else _taken(client, wanted, spec.vpc_id)
        ),
        spec.common.resource_id,
        lambda: ownership.left_behind(node.runtime_properties, lambda: aws.find_owned_security_groups(client, owner)),
    )
    dry_run_security_group(client, spec, owner)
    if not spec.common.external:
        resolve_rules(client, spec, node.targets_fresh_for(spec.common.propagation))
    report(f"Security group {spec.name} is valid.")


def dry_run_security_group(client, spec: SecurityGroupSpec, owner: dict[str, str]) -> None:
    """CreateSecurityGroup with DryRun, for a new group (its rules need its id: they are checked by parsing)."""
    if spec.common.external:
        return
    tags = ownership.creation_tags(owner, spec.common.tags, spec.name)
    refusal = aws.dry_run_create_security_group(client, spec.name, spec.description, spec.vpc_id, tags)
    prop = "vpc_id" if refusal is not None and errors.error_code(refusal) == "InvalidVpcID.NotFound" else "resource_id"
    errors.check_dry_run("CreateSecurityGroup", refusal, prop, "correct the group's name, description or vpc_id")


# --- properties -------------------------------------------------------------


def parse(node: utils.NodeFacts) -> SecurityGroupSpec:
    """The SecurityGroup properties and every rule, checked without calling AWS."""
    properties = node.properties
    common = utils.parse_common(properties)
    name = common.resource_id or node.generated_name
    if not common.external and (len(name) > 255 or not name.isascii() or name.startswith("sg-")):
        raise BadInput(
            "resource_id",
            f"is not a usable group name ({name!r})",
            "use at most 255 ASCII characters, not starting with 'sg-'",
        )
    description = as_text(properties.get("description")) or (
        f"Cloudify security group for node {node.node_id} of deployment {node.deployment_id}"
    )
    if len(description) > 255 or not description.isascii():
        raise BadInput("description", "is longer than 255 characters or not ASCII", "shorten it")
    vpc_id = as_text(properties.get("vpc_id"))
    if vpc_id and not VPC_ID_PATTERN.match(vpc_id):
        raise BadInput(
            "vpc_id",
            f"is {vpc_id!r}, not a VPC id",
            "give an id such as vpc-0abc1234, or leave it empty for the default VPC",
        )
    return SecurityGroupSpec(
        common, name, description, vpc_id, parse_rules(properties, "rules"), parse_rules(properties, "egress_rules")
    )


# --- AWS ------------------------------------------------------------------------


def resolve_rules(client, spec: SecurityGroupSpec, fresh_for: float = 0.0) -> tuple[list[dict], list[dict]]:
    """(ingress, egress) permissions with every source group as an id. A group
    given by id must exist; one given by name is looked up in this group's VPC.
    While ``fresh_for`` lasts, a source group not found yet is looked up again."""
    resolved: dict[str, str] = {}
    vpc_id: list[str] = []  # looked up once, only when a rule names a group

    def own_vpc() -> str:
        if not vpc_id:
            vpc_id.append(spec.vpc_id or aws.default_vpc_id(client) or "")
        return vpc_id[0]

    def permission(rule: Rule) -> dict:
        if not rule.source_group:
            return rule.permission
        if rule.source_group not in resolved:
            resolved[rule.source_group] = _source_group_id(client, rule, own_vpc, fresh_for)
        return {**rule.permission, "UserIdGroupPairs": [{"GroupId": resolved[rule.source_group]}]}

    return [permission(rule) for rule in spec.ingress], [permission(rule) for rule in spec.egress]


def _source_group_id(client, rule: Rule, own_vpc, fresh_for: float) -> str:
    prop = f"{rule.where}.src_group_id"
    if GROUP_ID_PATTERN.match(rule.source_group):
        if not aws.find_security_group_by_id(client, rule.source_group, fresh_for):
            raise BadInput(
                prop,
                f"names security group '{rule.source_group}', which does not exist (InvalidGroup.NotFound)",
                "give the id or name of an existing group",
            )
        return rule.source_group
    vpc_id = own_vpc()
    here = aws.until_found(
        lambda: aws.find_security_groups_by_name(client, rule.source_group, vpc_id),
        fresh_for,
        "a listing of security groups by name",
    )
    if len(here) == 1:
        return here[0]["GroupId"]
    elsewhere = sorted({group["VpcId"] for group in aws.find_security_groups_by_name(client, rule.source_group)})
    where = f"VPC {vpc_id}" if vpc_id else "this region (there is no default VPC)"
    found = f"; groups of that name are in {', '.join(elsewhere)}" if elsewhere else ""
    raise BadInput(
        prop,
        f"names security group '{rule.source_group}', which is not in {where}{found}",
        "create that group first in the same VPC (depends_on orders it), give its id, or set vpc_id",
    )


def _find(client, wanted: str, vpc_id: str) -> str | None:
    """The id of a group given by id, or by name within the node's VPC (or the default VPC)."""
    if GROUP_ID_PATTERN.match(wanted):
        group = aws.find_security_group_by_id(client, wanted)
        return group["GroupId"] if group else None
    groups = aws.find_security_groups_by_name(client, wanted, vpc_id or aws.default_vpc_id(client))
    return groups[0]["GroupId"] if groups else None


def _taken(client, name: str, vpc_id: str) -> str | None:
    """The id of a group that already has this name in the VPC a new group goes in.
    One describe by name; the default VPC is looked up only if that finds any."""
    groups = aws.find_security_groups_by_name(client, name)
    if groups and not vpc_id:
        vpc_id = aws.default_vpc_id(client) or ""
    return next((group["GroupId"] for group in groups if group.get("VpcId") == vpc_id), None)


def _create_once(
    client, owner: dict[str, str], spec: SecurityGroupSpec, tags: dict[str, str], warn, rerun: bool
) -> str:
    """Creates the group; a Duplicate answer for a group tagged as this node
    instance's (a resent call whose first answer was lost) adopts it."""

    def adopt(copies: list[dict]) -> str:
        warn(f"Security group {spec.name} was made by an earlier attempt whose answer was lost; adopting it.")
        return copies[0]["GroupId"]

    return ownership.create_once(
        lambda: aws.create_security_group(client, spec.name, spec.description, spec.vpc_id, tags),
        lambda: [group for group in aws.find_owned_security_groups(client, owner) if group["GroupName"] == spec.name],
        adopt,
        "choose another resource_id, or set use_external_resource to true to use it",
        fresh_for=spec.common.propagation,
        made_before=rerun,
    )


def _delete_own_groups(client, instance, owner: dict[str, str], window: float, report) -> None:
    """Deletes the group this node instance made: the recorded one, or any an
    interrupted create left unrecorded (found by its ownership tags). Within
    ``window`` seconds of its create, or while instances that used it are
    still being torn down, EC2's answers are asked again."""
    properties = instance.runtime_properties
    group_ids = ownership.recorded_or_owned(
        ownership.recorded(properties),
        lambda: [group["GroupId"] for group in aws.find_owned_security_groups(client, owner)],
    )
    fresh_for = utils.fresh_for(properties, window)
    ownership.remove_each(
        group_ids,
        lambda group_id: aws.delete_security_group(client, group_id, fresh_for=fresh_for, in_use_for=window),
        KIND,
        report,
    )
    utils.forget(instance, constants.AWS_RESOURCE_ID, constants.CREATED_AT, save=True)
