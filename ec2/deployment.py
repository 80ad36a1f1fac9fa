"""The deployment-wide part of validation.create: what the whole deployment
creates against the account's quotas (ec2.quotas), with the node instances
listed from the local engine's storage or the manager's REST service. Done
once per execution in a process; the aws_preflight workflow asks too."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable
from types import SimpleNamespace

from ec2 import connection, quotas
from ec2.errors import PluginError

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
    node = ctx.node
    alone = quotas.Member(
        node.id, ctx.instance.id, tuple(getattr(node, "type_hierarchy", None) or [node.type]), node.properties
    )
    with _quota_lock:  # the other validations of the execution wait for the first one's answer
        report = _quota_reports.get(key) if key[1] else None
        if report is None:
            members, partial = _deployment_members(getattr(ctx, "_endpoint", None), ctx.deployment.id, alone)
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


def _deployment_members(endpoint, deployment_id, alone: quotas.Member) -> tuple[list[quotas.Member], str]:
    """Every node instance of the deployment: from the local engine's storage
    (what cfy and tools.local use), else the manager's REST service, through
    the operation's endpoint. When neither answers (a unit test's mock ctx),
    the operation's node instance (``alone``), and why."""
    try:
        storage = getattr(endpoint, "storage", None)
        if storage is not None:
            nodes, instances = storage.get_nodes(), storage.get_node_instances()
        else:
            client = endpoint.rest_client
            nodes = _every(client.nodes.list, deployment_id=deployment_id, evaluate_functions=True)
            instances = _every(client.node_instances.list, deployment_id=deployment_id)
    except Exception as error:  # no storage and no manager to ask
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


def member(view: SimpleNamespace) -> quotas.Member:
    """The aws_preflight workflow's view of a node instance, as ec2.quotas wants it."""
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
