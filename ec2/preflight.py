"""The ``aws_preflight`` workflow: proving a deployment before anything exists.

Each resource module makes its own dry run (``dry_run_*`` in ec2.keypair,
ec2.securitygroup, ec2.elasticip and ec2.instance): the create call the node
would make, sent with ``DryRun=True``; ``errors.check_dry_run`` turns a
refusal into an error that names the property and the fix.

``run`` (the ``aws_preflight`` workflow): who the credentials of each distinct
``aws_config`` are (STS GetCallerIdentity, logged), every check of
validation.create, dry run included, for every node instance of this plugin's
types, and one error listing every problem found (the first of each node instance). It runs
on views of the workflow's node instances shaped like an operation's ctx. A
name that only another node of the deployment will create is not reported
as missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cloudify.decorators import workflow
from cloudify.exceptions import NonRecoverableError
from cloudify.manager import get_provider_context

from ec2 import (
    connection,
    deployment,
    elasticip,
    errors,
    instance_request,
    keypair,
    quotas,
    secrets,
    securitygroup,
    utils,
)
from ec2 import instance as instance_lifecycle
from ec2.constants import ELASTIC_IP, INSTANCE, KEY_PAIR, SECURITY_GROUP
from ec2.errors import BadInput, PluginError
from ec2.properties import as_text

RELATIONSHIP_TYPES = (instance_request.KEYPAIR_RELATIONSHIP, instance_request.SECURITY_GROUP_RELATIONSHIP)

SOURCE_GROUP_PROP = re.compile(r"^(rules|egress_rules)\[(\d+)\]\.src_group_id$")


# --- the aws_preflight workflow --------------------------------------------------


@workflow
def run(ctx, **_):
    """Validates every node instance of this plugin's types, with AWS's dry
    runs, creating nothing; raises one error listing every problem found."""
    local = bool(getattr(ctx, "local", False))
    provider_context = {} if getattr(ctx, "local", True) else _provider_context()
    with utils.acting_for(ctx.deployment.id):
        _preflight(ctx.deployment.id, ctx.node_instances, ctx.logger, local, provider_context)


def _preflight(deployment_id: str, node_instances: Iterable, logger, local: bool, provider_context: dict) -> None:
    views = [
        _view(instance, deployment_id, logger, local, provider_context)
        for instance in sorted(node_instances, key=lambda instance: (instance.node_id, instance.id))
        if utils.plugin_node_type(instance.node)
    ]
    pending = _names_install_creates(views)
    problems, unusable = _check_identities(logger, views)
    for view in views:
        if view.instance.id in unusable:
            continue
        try:
            _check(view)
        except (PluginError, ClientError, BotoCoreError) as error:
            if isinstance(error, BadInput) and _created_by_install(error, view.node.properties, pending):
                logger.info(f"{utils.node_label(view)}: {error.prop} names what install creates first.")
                continue
            text = str(error) if isinstance(error, PluginError) else errors.describe(error)[1]
            problems.append(secrets.redact(f"- node '{view.node.id}' (instance {view.instance.id}): {text}"))
    try:
        report = deployment.deployment_quotas(
            [deployment.member(view) for view in views if view.instance.id not in unusable], deployment_id
        )
    except (PluginError, ClientError, BotoCoreError) as error:  # throttled or unreachable after botocore's retries
        text = str(error) if isinstance(error, PluginError) else errors.describe(error)[1]
        report = quotas.Report()
        problems.append(secrets.redact(f"- quotas: could not be checked: {text}"))
    for line in report.unchecked:
        logger.warning(f"aws_preflight: quota not checked: {line}")
    problems += [secrets.redact(f"- quota: {line}") for line in report.shortfalls]
    if problems:
        raise NonRecoverableError(
            f"aws_preflight found {len(problems)} problem(s); nothing was created:\n" + "\n".join(problems)
        )
    unchecked = f", {len(report.unchecked)} quota(s) not checked (warned above)" if report.unchecked else ""
    logger.info(
        f"aws_preflight: all {len(views)} AWS node instance(s) passed, AWS's dry runs and the quotas included"
        f"{unchecked}."
    )


def _check_identities(logger, views: list[SimpleNamespace]) -> tuple[list[str], set[str]]:
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
        logger.info(f"aws_preflight: node(s) {nodes} act as {identity['Arn']} (account {identity['Account']}).")
    return problems, unusable


def _check(view: SimpleNamespace) -> None:
    """The plugin's validation.create checks of a node instance's type, on what its view says."""
    if view.node_type == INSTANCE:
        instance_lifecycle.check(instance_request.read(view, validating=True), view.logger)
        return
    check = {KEY_PAIR: keypair.check, SECURITY_GROUP: securitygroup.check, ELASTIC_IP: elasticip.check}
    check[view.node_type](utils.node_facts(view), view.logger.info)


def _provider_context() -> dict:
    """The manager's provider context (agents key pair and group)."""
    try:
        return get_provider_context() or {}
    except Exception:  # a manager without one
        return {}


def _view(instance, deployment_id: str, logger, local: bool, provider_context: dict) -> SimpleNamespace:
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
        node_type=utils.plugin_node_type(instance.node),
        node=_node(instance.node),
        instance=SimpleNamespace(
            id=instance.id,
            runtime_properties=dict(instance.runtime_properties or {}),
            relationships=relationships,
        ),
        deployment=SimpleNamespace(id=deployment_id),
        logger=logger,
        provider_context=provider_context,
        # What the install workflow will meet: the engine, and the operations the node maps.
        local=local,
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
    names = set()
    for view in views:
        try:
            common = utils.parse_common(view.node.properties)
            if common.external:
                continue
            if view.node_type == KEY_PAIR:
                names.add(keypair.parse(view.node.properties, utils.node_facts(view).generated_name).key_name)
            elif view.node_type == SECURITY_GROUP:
                names.add(securitygroup.parse(utils.node_facts(view)).name)
        except PluginError:  # reported by that node's own check
            continue
    return frozenset(names)


def _created_by_install(error: BadInput, properties: Mapping[str, Any], pending: frozenset[str]) -> bool:
    """Whether a "does not exist" names a key pair or group another node creates
    during install (before this one: depends_on orders them)."""
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
