"""Proving a deployment before anything exists: AWS's own dry runs, and the
``aws_preflight`` workflow.

``dry_run_*``: the create call a node would make (RunInstances, CreateKeyPair
or ImportKeyPair, CreateSecurityGroup, AllocateAddress), sent with
``DryRun=True``. AWS checks the permissions, the AMI, the instance type, the
subnet and the quotas, and creates nothing. A refusal becomes an error that
names the property and the fix. Each type's validation.create ends with one.
A validation run before install (this workflow, or the classic
validation.creation hook) finds the instance's key pair and groups not yet
created: they are left out of its RunInstances dry run, unless external.

``run`` (the ``aws_preflight`` workflow): who the credentials of each distinct
``aws_config`` are (STS GetCallerIdentity, logged), every check of
validation.create, dry run included, for every node instance of this plugin's
types, and one error listing every problem found (the first of each node instance). It runs
on views of the workflow's node instances shaped like an operation's ctx. A
name that only another node of the deployment will create is not reported
as missing.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cloudify.decorators import workflow
from cloudify.exceptions import NonRecoverableError

from ec2 import aws, connection, constants, errors, instance_request, quotas, secrets, utils
from ec2.constants import ELASTIC_IP, INSTANCE, KEY_PAIR, NODE_TYPES, SECURITY_GROUP
from ec2.errors import BadInput, PluginError
from ec2.properties import as_text

RELATIONSHIP_TYPES = (instance_request.KEYPAIR_RELATIONSHIP, instance_request.SECURITY_GROUP_RELATIONSHIP)

# What a dry run sends instead of the agent's init script: generating the real
# one has effects, and only its presence matters to AWS.
AGENT_SCRIPT_STAND_IN = "#!/bin/sh\n# stands in for the Cloudify agent's init script in a dry run\n"
PLACEHOLDER = "preflight-placeholder:{node}"
SOURCE_GROUP_PROP = re.compile(r"^(rules|egress_rules)\[(\d+)\]\.src_group_id$")

# RunInstances refusals by the property they are about, with the fix.
RUN_INSTANCES_PROPERTIES = {
    "InvalidAMIID.NotFound": ("image_id", "give an available AMI id of this region"),
    "InvalidAMIID.Malformed": ("image_id", "give an available AMI id of this region"),
    "InvalidAMIID.Unavailable": ("image_id", "give an available AMI id of this region"),
    "InvalidKeyPair.NotFound": ("parameters.key_name", "name an existing key pair, or connect a KeyPair node"),
    "InvalidSubnetID.NotFound": ("parameters.subnet_id", "give an existing subnet's id"),
    "InvalidGroup.NotFound": ("parameters.security_group_ids", "give existing security groups of the subnet's VPC"),
    "Unsupported": ("instance_type", "choose a type that this zone offers, or another placement"),
}


# --- the dry runs validation.create makes --------------------------------------


def dry_run_key_pair(ctx, client, spec) -> None:
    """CreateKeyPair (ImportKeyPair for a given public key) with DryRun, for a new key pair."""
    if spec.common.external:
        return
    tags = utils.creation_tags(ctx, spec.common.tags)
    if spec.public_key:
        refusal = aws.dry_run_import_key_pair(client, spec.key_name, spec.public_key, tags)
        _require("ImportKeyPair", refusal, "public_key_material", "give an OpenSSH RSA or ED25519 public key")
    else:
        refusal = aws.dry_run_create_key_pair(client, spec.key_name, tags)
        _require("CreateKeyPair", refusal, "resource_id", "give a key pair name AWS accepts")


def dry_run_security_group(ctx, client, spec) -> None:
    """CreateSecurityGroup with DryRun, for a new group (its rules need its id: they are checked by parsing)."""
    if spec.common.external:
        return
    tags = utils.creation_tags(ctx, spec.common.tags, spec.name)
    refusal = aws.dry_run_create_security_group(client, spec.name, spec.description, spec.vpc_id, tags)
    prop = "vpc_id" if refusal is not None and errors.error_code(refusal) == "InvalidVpcID.NotFound" else "resource_id"
    _require("CreateSecurityGroup", refusal, prop, "correct the group's name, description or vpc_id")


def dry_run_elastic_ip(ctx, client, spec) -> None:
    """AllocateAddress with DryRun, for a new address."""
    if spec.common.external:
        return
    refusal = aws.dry_run_allocate_address(client, utils.creation_tags(ctx, spec.common.tags))
    _require("AllocateAddress", refusal, "tags", "correct the tags")


def dry_run_instance(ctx, client, spec) -> None:
    """RunInstances with DryRun: the request create would send, without the
    ClientToken, and without a connected key pair or group that does not exist
    yet (validation run before install: the preflight, or the classic hook)."""
    if spec.common.external:
        return
    relationships, placeholders = _with_stand_ins(ctx)
    request = instance_request.build_request(_WithStandIns(ctx, relationships), spec)
    if request.get("KeyName") in placeholders:
        del request["KeyName"]
    groups = [group for group in request.get("SecurityGroupIds", []) if group not in placeholders]
    request.pop("SecurityGroupIds", None)
    if groups:
        request["SecurityGroupIds"] = groups
    # A key pair or group this deployment made a moment ago may be unknown to EC2 for a while.
    # Once per node and request shape in this process (instance_request.dry_run_launch).
    refusal = instance_request.dry_run_launch(
        ctx, client, request, utils.targets_fresh_for(ctx, spec.common.propagation)
    )
    if refusal is not None:
        prop, fix = RUN_INSTANCES_PROPERTIES.get(
            errors.error_code(refusal), ("parameters", "correct the value AWS names")
        )
        _require("RunInstances", refusal, prop, fix)


class WithAgentScriptStandIn:
    """The operation's ctx, with a stand-in for the agent's init script."""

    agent = SimpleNamespace(init_script=lambda *_args, **_kwargs: AGENT_SCRIPT_STAND_IN)

    def __init__(self, ctx) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


class _WithStandIns(WithAgentScriptStandIn):
    """The operation's ctx, also with stand-ins for relationship targets not created yet."""

    def __init__(self, ctx, relationships: list) -> None:
        super().__init__(ctx)
        self.instance = SimpleNamespace(
            id=ctx.instance.id, runtime_properties=ctx.instance.runtime_properties, relationships=relationships
        )


def _with_stand_ins(ctx) -> tuple[list, frozenset[str]]:
    """The instance's relationships, a target without an AWS id given a stand-in
    id (see ``_stand_in``), and the stand-ins that are placeholders."""
    relationships, placeholders = [], set()
    for relationship in ctx.instance.relationships:
        target = relationship.target
        stand_in = None if target.instance.runtime_properties.get(constants.AWS_RESOURCE_ID) else _stand_in(ctx, target)
        if stand_in:
            runtime = {**target.instance.runtime_properties, constants.AWS_RESOURCE_ID: stand_in[0]}
            if stand_in[1]:
                placeholders.add(stand_in[0])
            relationship = SimpleNamespace(
                type=relationship.type,
                type_hierarchy=getattr(relationship, "type_hierarchy", None) or [relationship.type],
                target=SimpleNamespace(
                    node=target.node, instance=SimpleNamespace(id=target.instance.id, runtime_properties=runtime)
                ),
            )
        relationships.append(relationship)
    return relationships, frozenset(placeholders)


def _stand_in(ctx, target) -> tuple[str, bool] | None:
    """(id, is a placeholder) for a key pair or security group not created yet:
    an external one's resource_id, else the name a new key pair will get or a
    placeholder for a new group."""
    from ec2 import keypair  # they import this module

    node_type, properties = _our_type(target.node), target.node.properties
    external = bool(node_type) and utils.use_external(target.node)
    wanted = as_text(properties.get("resource_id"))
    if node_type == KEY_PAIR:
        if external and wanted:
            return wanted, False
        try:
            name = keypair.parse(properties, f"{ctx.deployment.id}-{target.instance.id}").key_name
        except PluginError:  # reported by the key pair's own validation
            name = PLACEHOLDER.format(node=target.node.id)
        return name, True
    if node_type == SECURITY_GROUP:
        if external and constants.GROUP_ID_PATTERN.match(wanted):
            return wanted, False
        return PLACEHOLDER.format(node=target.node.id), True
    return None


def _require(operation: str, refusal: ClientError | None, prop: str, fix: str) -> None:
    """Raises the error for a dry run AWS refused. The resource's own Duplicate
    code passes: whether the name may be taken is validation's existence check."""
    if refusal is None:
        return
    code = errors.error_code(refusal)
    if code in ("InvalidKeyPair.Duplicate", "InvalidGroup.Duplicate"):
        return
    said = f"AWS refuses a dry run of {operation} ({code}: {refusal.response.get('Error', {}).get('Message', '')})"
    if code in errors.PERMISSION_CODES:
        raise BadInput(
            "aws_config",
            f"gives credentials that may not call {operation}: {said}",
            f"allow ec2:{operation} to these credentials (IAM policy), or give other credentials in aws_config",
        )
    if code in errors.QUOTA_CODES:
        raise PluginError(
            f"{said}: a quota or the capacity is used up. Fix: free some, ask AWS for a higher quota "
            "(Service Quotas), or choose another instance type or zone"
        )
    raise BadInput(prop, f"makes a {operation} request that {said}", fix)


# --- the aws_preflight workflow --------------------------------------------------


@workflow
def run(ctx, **_):
    """Validates every node instance of this plugin's types, with AWS's dry
    runs, creating nothing; raises one error listing every problem found."""
    with utils.acting_for(ctx.deployment.id):
        _preflight(ctx)


def _preflight(ctx):
    provider_context = _provider_context(ctx)
    views = [
        _view(ctx, instance, provider_context)
        for instance in sorted(ctx.node_instances, key=lambda instance: (instance.node_id, instance.id))
        if _our_type(instance.node)
    ]
    pending = _names_install_creates(views)
    problems, unusable = _check_identities(ctx, views)
    for view in views:
        if view.instance.id in unusable:
            continue
        try:
            _check_of(view.node_type)(view)
        except (PluginError, ClientError, BotoCoreError) as error:
            if _created_by_install(error, view.node.properties, pending):
                ctx.logger.info(f"{utils.node_label(view)}: {error.prop} names what install creates first.")
                continue
            text = str(error) if isinstance(error, PluginError) else errors.describe(error)[1]
            problems.append(secrets.redact(f"- node '{view.node.id}' (instance {view.instance.id}): {text}"))
    try:
        report = deployment_quotas(
            [_member(view) for view in views if view.instance.id not in unusable], ctx.deployment.id
        )
    except (PluginError, ClientError, BotoCoreError) as error:  # throttled or unreachable after botocore's retries
        text = str(error) if isinstance(error, PluginError) else errors.describe(error)[1]
        report = quotas.Report()
        problems.append(secrets.redact(f"- quotas: could not be checked: {text}"))
    for line in report.unchecked:
        ctx.logger.warning(f"aws_preflight: quota not checked: {line}")
    problems += [secrets.redact(f"- quota: {line}") for line in report.shortfalls]
    if problems:
        raise NonRecoverableError(
            f"aws_preflight found {len(problems)} problem(s); nothing was created:\n" + "\n".join(problems)
        )
    unchecked = f", {len(report.unchecked)} quota(s) not checked (warned above)" if report.unchecked else ""
    ctx.logger.info(
        f"aws_preflight: all {len(views)} AWS node instance(s) passed, AWS's dry runs and the quotas included"
        f"{unchecked}."
    )


# --- the deployment's quotas (ec2.quotas) ----------------------------------------------

# Per (deployment, execution): the report of the first validation that checked, shared by the
# others of this process (the local engine runs them all in one; a manager, each in its own).
_quota_reports: dict[tuple[str, str], quotas.Report] = {}
_quota_lock = threading.Lock()
QUOTA_REPORTS_KEPT = 32
REST_PAGE_SIZE = 1000


def deployment_quotas(members: Iterable[quotas.Member], deployment_id: str | None) -> quotas.Report:
    """ec2.quotas' report on everything these node instances create, each client configuration apart."""
    owner = str(deployment_id or "local")
    report = quotas.Report()
    for plan in quotas.plan_of(members).values():
        quotas_client = functools.partial(connection.service_quotas_client, plan.aws_config)
        report.extend(quotas.check(plan, connection.ec2_client(plan.aws_config), quotas_client, owner))
    return report


def check_deployment_quotas(ctx) -> None:
    """validation.create's deployment-wide part: refuses when what the whole
    deployment creates exceeds what the account has left; warns about quotas
    that could not be read. Done once per execution in a process."""
    key = (str(ctx.deployment.id), str(getattr(ctx, "execution_id", None) or ""))
    with _quota_lock:  # the other validations of the execution wait for the first one's answer
        report = _quota_reports.get(key) if key[1] else None
        if report is None:
            members, partial = _deployment_members(ctx)
            report = deployment_quotas(members, ctx.deployment.id)
            if partial:
                report.unchecked.insert(0, f"{partial}: this node instance was checked alone")
            for line in report.unchecked:
                ctx.logger.warning(f"Quota not checked: {line}")
            if key[1]:
                _quota_reports[key] = report
                while len(_quota_reports) > QUOTA_REPORTS_KEPT:
                    del _quota_reports[next(iter(_quota_reports))]
    if report.shortfalls:
        lines = "\n".join(f"- {line}" for line in report.shortfalls)
        raise PluginError(f"the deployment needs more than the account's quotas leave; nothing was created:\n{lines}")


def _deployment_members(ctx) -> tuple[list[quotas.Member], str]:
    """Every node instance of the operation's deployment: from the local
    engine's storage (what cfy and tools.local use), else the manager's REST
    service. When neither answers (a unit test's mock ctx), the node instance
    alone, and why."""
    endpoint = getattr(ctx, "_endpoint", None)
    try:
        storage = getattr(endpoint, "storage", None)
        if storage is not None:
            nodes, instances = storage.get_nodes(), storage.get_node_instances()
        else:
            client = endpoint.rest_client  # type: ignore[union-attr]
            nodes = _every(client.nodes.list, deployment_id=ctx.deployment.id, evaluate_functions=True)
            instances = _every(client.node_instances.list, deployment_id=ctx.deployment.id)
    except Exception as error:  # no storage and no manager to ask
        node = ctx.node
        alone = quotas.Member(
            node.id, ctx.instance.id, tuple(getattr(node, "type_hierarchy", None) or [node.type]), node.properties
        )
        return [alone], f"the deployment's other node instances could not be listed ({type(error).__name__})"
    by_id = {node["id"]: node for node in nodes}
    return [
        quotas.Member(
            instance["node_id"],
            instance["id"],
            tuple(by_id[instance["node_id"]].get("type_hierarchy") or [by_id[instance["node_id"]]["type"]]),
            by_id[instance["node_id"]].get("properties") or {},
            tuple(by_id[instance["node_id"]].get("relationships") or ()),
        )
        for instance in instances
        if instance["node_id"] in by_id
    ], ""


def _every(list_call, **filters) -> list:
    """Every item of a REST listing, page by page (``_offset``, ``_size``)."""
    found: list = []
    while True:
        page = list_call(_offset=len(found), _size=REST_PAGE_SIZE, **filters)
        found += list(page)
        if not len(page) or len(found) >= page.metadata.pagination.total:
            return found


def _member(view: SimpleNamespace) -> quotas.Member:
    relationships = tuple(
        {
            "type": relationship.type,
            "type_hierarchy": relationship.type_hierarchy,
            "target_id": relationship.target.node.id,
        }
        for relationship in view.instance.relationships
    )
    return quotas.Member(
        view.node.id, view.instance.id, tuple(view.node.type_hierarchy), view.node.properties, relationships
    )


def _check_identities(ctx, views: list[SimpleNamespace]) -> tuple[list[str], set[str]]:
    """Asks STS once per distinct aws_config who the plugin acts as (GetCallerIdentity)
    and logs the account and ARN. Returns a problem line for each aws_config whose
    credentials do not work, and the node instances that use it (not checked further)."""
    users: dict[str, tuple[dict, list[SimpleNamespace]]] = {}
    for view in views:
        try:
            aws_config = utils.parse_common(view.node.properties).aws_config
        except PluginError:  # reported by that node's own check
            continue
        key = json.dumps(connection.client_settings(aws_config), sort_keys=True)
        users.setdefault(key, (aws_config, []))[1].append(view)
    problems: list[str] = []
    unusable: set[str] = set()
    for aws_config, group in users.values():
        nodes = ", ".join(sorted({f"'{view.node.id}'" for view in group}))
        try:
            identity = connection.sts_client(aws_config).get_caller_identity()
        except (PluginError, ClientError, BotoCoreError) as error:
            text = str(error) if isinstance(error, PluginError) else errors.describe(error)[1]
            problems.append(secrets.redact(f"- node(s) {nodes}: {text}"))
            unusable.update(view.instance.id for view in group)
            continue
        ctx.logger.info(f"aws_preflight: node(s) {nodes} act as {identity['Arn']} (account {identity['Account']}).")
    return problems, unusable


def _check_of(node_type: str):
    """The plugin's validation.create checks for a node type, as a plain function."""
    from ec2 import elasticip, instance, keypair, securitygroup  # they import this module

    return {
        INSTANCE: instance.check,
        KEY_PAIR: keypair.check,
        SECURITY_GROUP: securitygroup.check,
        ELASTIC_IP: elasticip.check,
    }[node_type]


def _our_type(node) -> str | None:
    hierarchy = list(getattr(node, "type_hierarchy", None) or [node.type])
    return next((name for name in NODE_TYPES if name in hierarchy), None)


def _provider_context(ctx) -> dict:
    """The manager's provider context (agents key pair and group); none locally."""
    if getattr(ctx, "local", True):
        return {}
    try:
        from cloudify.manager import get_provider_context

        return get_provider_context() or {}
    except Exception:  # a manager without one
        return {}


def _view(ctx, instance, provider_context: dict) -> SimpleNamespace:
    """A workflow node instance shaped like an operation's ctx (read-only copies)."""
    relationships = [
        SimpleNamespace(
            type=relationship.type,
            type_hierarchy=[
                relationship.type,
                *(name for name in RELATIONSHIP_TYPES if relationship.relationship.is_derived_from(name)),
            ],
            target=SimpleNamespace(
                node=_node(relationship.target_node_instance.node),
                instance=SimpleNamespace(
                    id=relationship.target_id,
                    runtime_properties=dict(relationship.target_node_instance.runtime_properties or {}),
                ),
            ),
        )
        for relationship in instance.relationships
    ]
    return SimpleNamespace(
        type="node-instance",
        node_type=_our_type(instance.node),
        node=_node(instance.node),
        instance=SimpleNamespace(
            id=instance.id,
            runtime_properties=dict(instance.runtime_properties or {}),
            relationships=relationships,
        ),
        deployment=SimpleNamespace(id=ctx.deployment.id),
        logger=ctx.logger,
        agent=SimpleNamespace(init_script=lambda *_args, **_kwargs: AGENT_SCRIPT_STAND_IN),
        provider_context=provider_context,
        # What the install workflow will meet: the engine, and the operations the node maps.
        local=bool(getattr(ctx, "local", False)),
        workflow_id="install",
        operations=frozenset(name for name in instance.node.operations if instance.node.has_operation(name)),
    )


def _node(node) -> SimpleNamespace:
    return SimpleNamespace(
        id=node.id,
        type=node.type,
        type_hierarchy=list(node.type_hierarchy or [node.type]),
        properties=dict(node.properties or {}),
    )


def _names_install_creates(views: Iterable[SimpleNamespace]) -> frozenset[str]:
    """The key pair and security group names that install will create."""
    from ec2 import keypair, securitygroup

    names = set()
    for view in views:
        try:
            common = utils.parse_common(view.node.properties)
            if common.external:
                continue
            if view.node_type == KEY_PAIR:
                names.add(keypair.parse(view.node.properties, utils.generated_name(view)).key_name)
            elif view.node_type == SECURITY_GROUP:
                spec = securitygroup.parse(
                    view.node.properties, utils.generated_name(view), view.node.id, view.deployment.id
                )
                names.add(spec.name)
        except PluginError:  # reported by that node's own check
            continue
    return frozenset(names)


def _created_by_install(error: Exception, properties: Mapping[str, Any], pending: frozenset[str]) -> bool:
    """Whether a "does not exist" names a key pair or group another node creates
    during install (before this one: depends_on orders them)."""
    if not isinstance(error, BadInput):
        return False
    parameters = properties.get("parameters") or {}
    named: list[str] = []
    if error.prop == "parameters.key_name":
        named = [as_text(parameters.get("key_name") or parameters.get("KeyName"))]
    elif error.prop == "parameters.security_groups":
        given = [*(parameters.get("security_groups") or []), *(parameters.get("SecurityGroups") or [])]
        named = [as_text(name) for name in given if not as_text(name).startswith("sg-")]
    elif match := SOURCE_GROUP_PROP.match(error.prop):
        rules = properties.get(match.group(1)) or []
        index = int(match.group(2))
        rule = rules[index] if index < len(rules) and isinstance(rules[index], dict) else {}
        named = [as_text(rule.get("src_group_id"))]
    return all(named) and bool(named) and set(named) <= pending
