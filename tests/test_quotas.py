"""Quotas (ec2/quotas.py): aws_preflight and install's validation.create add up
what the whole deployment creates and compare it with what the account has
left. On the moto server: its DescribeAccountAttributes answers
vpc-max-elastic-ips 5, its Service Quotas knows the vpc quotas (60 rules per
group, 5 groups per interface) but no EC2 vCPU quota."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError
from cloudify.exceptions import NonRecoverableError, WorkflowFailed

from ec2 import connection, constants, deployment, quotas
from tests import test_manager_mode
from tests.support import IMAGE_ID, assert_nothing_left, instance_node, live_instances
from tools.ec2proxy import Ec2Proxy, ProxyConfig, Refusal

# Manager mode's fixtures (each operation in a process of its own; they skip without `make wagon`).
plugin = test_manager_mode.plugin
managed = test_manager_mode.managed

ELASTIC_IP = "cloudify.aws.nodes.ElasticIP"
SECURITY_GROUP = "cloudify.aws.nodes.SecurityGroup"
TO_GROUP = "cloudify.aws.relationships.instance_connected_to_security_group"
SIX_ADDRESSES = {"ip": {"type": ELASTIC_IP, "instances": {"deploy": 6}}}
ELASTIC_IP_SHORTFALL = (
    "elastic IPs: node 'ip' (6 instances) need 6; 5 left (vpc-max-elastic-ips 5 minus 0 in use). "
    "Fix: release addresses nobody uses, ask AWS for more (Service Quotas, EC2-VPC Elastic IPs, L-0263D0A3), "
    "or allocate fewer"
)


def rules(count: int) -> list[dict]:
    return [{"ip_protocol": "tcp", "from_port": port, "to_port": port, "cidr_ip": "0.0.0.0/0"} for port in range(count)]


def group_with_rules(count: int, key: str = "rules") -> dict:
    """A SecurityGroup node ``group`` with ``count`` rules under ``key``."""
    return {"group": {"type": SECURITY_GROUP, "properties": {"description": "many", key: rules(count)}}}


def preflight_refusal(deployment) -> str:
    """What aws_preflight's refusal says (it must refuse)."""
    with pytest.raises(NonRecoverableError) as raised:
        deployment.execute("aws_preflight")
    return str(raised.value)


def servers(count: int, instance_type: str = "m5.large", **properties) -> dict:
    node = instance_node(instance_type=instance_type, **properties)
    node["instances"] = {"deploy": count}
    return {"server": node}


def hook_quotas_client(monkeypatch, handler) -> list[dict]:
    """Every GetServiceQuota the plugin's Service Quotas clients send goes to
    ``handler(params)``, which answers (returns the Quota) or raises; the sent
    parameters are listed."""
    sent: list[dict] = []
    create = connection._create_quotas_client

    def answer(params, **_):
        sent.append(json.loads(params["body"]))
        quota = handler(sent[-1])
        return None if quota is None else (_Http(), {"Quota": quota})

    def hooked(settings):
        client = create(settings)
        client.meta.events.register("before-call.service-quotas.GetServiceQuota", answer)
        return client

    monkeypatch.setattr(connection, "_create_quotas_client", hooked)
    connection.clear_cache()
    return sent


class _Http:
    status_code = 200
    headers: dict = {}


def vcpu_quota(value: float):
    """A Service Quotas that answers ``value`` for every EC2 quota (and moto's own answer for the others)."""

    def handler(params):
        return {"Value": value, "QuotaCode": params["QuotaCode"]} if params["ServiceCode"] == "ec2" else None

    return handler


def refused(params):
    raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetServiceQuota")


# --- elastic IPs: the acceptance case ----------------------------------------------------


def test_preflight_refuses_six_elastic_ips_against_a_limit_of_five(deploy, ec2):
    with pytest.raises(NonRecoverableError) as raised:
        deploy(SIX_ADDRESSES).execute("aws_preflight")
    assert str(raised.value) == (
        f"aws_preflight found 1 problem(s); nothing was created:\n- quota: {ELASTIC_IP_SHORTFALL}"
    )
    assert_nothing_left(ec2)


def test_install_refuses_six_elastic_ips_in_validation_and_creates_nothing(deploy, ec2, capsys):
    with pytest.raises(WorkflowFailed):
        deploy(SIX_ADDRESSES).install()
    out = capsys.readouterr().out
    assert "Task failed 'ec2.elasticip.creation_validation' -> node 'ip': the deployment needs more" in out
    assert ELASTIC_IP_SHORTFALL in out
    assert "Task started 'ec2.elasticip.allocate'" not in out
    assert_nothing_left(ec2)


def test_install_refuses_six_addresses_of_several_nodes_beside_instances_naming_each_node(deploy, ec2, capsys):
    nodes = {
        "front": {"type": ELASTIC_IP, "instances": {"deploy": 2}},
        "back": {"type": ELASTIC_IP, "instances": {"deploy": 4}},
        **servers(2, "t3.micro"),
    }
    with pytest.raises(WorkflowFailed):
        deploy(nodes).install()
    out = capsys.readouterr().out
    assert "elastic IPs: nodes 'back' (4 instances), 'front' (2 instances) need 6; 5 left" in out
    assert "Task failed 'ec2.instance.creation_validation' -> node 'server': the deployment needs more" in out
    assert_nothing_left(ec2)


def test_addresses_in_use_are_subtracted_from_the_limit(deploy, ec2):
    for _ in range(2):
        ec2.allocate_address(Domain="vpc")
    nodes = {"ip": {"type": ELASTIC_IP, "instances": {"deploy": 4}}}
    with pytest.raises(NonRecoverableError) as raised:
        deploy(nodes).execute("aws_preflight")
    assert "node 'ip' (4 instances) need 4; 3 left (vpc-max-elastic-ips 5 minus 2 in use)" in str(raised.value)


def test_install_of_exactly_the_limit_passes_every_validation(deploy, ec2):
    # Each validation after the first allocation still counts the deployment's own addresses as needed, not in use.
    deployment = deploy({"ip": {"type": ELASTIC_IP, "instances": {"deploy": 5}}})
    deployment.install()
    assert len(ec2.describe_addresses()["Addresses"]) == 5
    deployment.uninstall()
    assert_nothing_left(ec2)


def test_a_deployments_own_addresses_count_as_needed_not_in_use(ec2):
    owned = [{"ResourceType": "elastic-ip", "Tags": [{"Key": constants.TAG_DEPLOYMENT_ID, "Value": "dep"}]}]
    for _ in range(4):
        ec2.allocate_address(Domain="vpc", TagSpecifications=owned)
    ec2.allocate_address(Domain="vpc")  # someone else's
    plan = quotas.Plan(addresses=[("ip", f"ip_{n}") for n in range(4)])
    assert quotas.check(plan, ec2, _no_quotas_client, "dep") == quotas.Report()
    plan.addresses.append(("ip", "ip_4"))
    (line,) = quotas.check(plan, ec2, _no_quotas_client, "dep").shortfalls
    assert "need 5; 4 left (vpc-max-elastic-ips 5 minus 1 in use)" in line


def test_external_addresses_create_nothing_and_are_not_counted(deploy, ec2):
    existing = [ec2.allocate_address(Domain="vpc")["PublicIp"] for _ in range(5)]
    nodes = {
        f"kept{n}": {"type": ELASTIC_IP, "properties": {"use_external_resource": True, "resource_id": ip}}
        for n, ip in enumerate(existing)
    }
    deploy(nodes).execute("aws_preflight")


def test_elastic_ips_that_cannot_be_read_are_a_warning_not_a_pass_or_a_refusal(moto_server, deploy, ec2, capsys):
    refusal = Refusal("DescribeAccountAttributes", code="UnauthorizedOperation")
    with Ec2Proxy(moto_server.url, ProxyConfig(refusals=(refusal,))) as proxy:
        nodes = {
            "ip": {
                "type": ELASTIC_IP,
                "instances": {"deploy": 6},
                "properties": {"aws_config": {"endpoint_url": proxy.url}},
            }
        }
        deploy(nodes).execute("aws_preflight")
    out = capsys.readouterr().out
    assert (
        "WARNING: aws_preflight: quota not checked: elastic IPs could not be checked (UnauthorizedOperation: allow "
        "ec2:DescribeAccountAttributes and ec2:DescribeAddresses to these credentials); node 'ip' (6 instances) need 6"
    ) in out
    assert "1 quota(s) not checked (warned above)" in out


def test_throttling_while_reading_a_quota_is_a_problem_not_a_warning(moto_server, deploy):
    refusal = Refusal("DescribeAddresses", code="RequestLimitExceeded", status=503, message="Request limit exceeded.")
    with Ec2Proxy(moto_server.url, ProxyConfig(refusals=(refusal,))) as proxy:
        aws_config = {"endpoint_url": proxy.url, "max_attempts": 1}
        nodes = {"ip": {"type": ELASTIC_IP, "properties": {"aws_config": aws_config}}}
        with pytest.raises(NonRecoverableError) as raised:
            deploy(nodes).execute("aws_preflight")
    assert "- quotas: could not be checked: EC2 DescribeAddresses failed: RequestLimitExceeded" in str(raised.value)


@pytest.mark.manager_mode
def test_on_a_manager_each_validation_process_checks_the_whole_deployment(moto_server, managed, ec2, capsys):
    # Nothing is shared between operation processes: each validation adds up the deployment from the storage.
    with Ec2Proxy(moto_server.url) as proxy:
        aws_config = {"endpoint_url": proxy.url}
        deployment = managed({"ip": {**SIX_ADDRESSES["ip"], "properties": {"aws_config": aws_config}}})
        with pytest.raises(WorkflowFailed):
            deployment.install()
        counts = proxy.counts()
    assert counts["DescribeAddresses"] == counts["DescribeAccountAttributes"] == len(deployment.processes) >= 1
    assert proxy.mutating == []
    assert ELASTIC_IP_SHORTFALL in capsys.readouterr().out
    assert_nothing_left(ec2)


# --- vCPUs ------------------------------------------------------------------------------


def test_preflight_refuses_more_vcpus_than_the_quota_leaves(deploy, ec2, monkeypatch):
    ec2.run_instances(ImageId=IMAGE_ID, InstanceType="m5.large", MinCount=1, MaxCount=1)  # 2 vCPUs in use
    sent = hook_quotas_client(monkeypatch, vcpu_quota(6))
    with pytest.raises(NonRecoverableError) as raised:
        deploy(servers(3)).execute("aws_preflight")
    assert (
        "- quota: vCPUs of Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances: node 'server' "
        "(3 instances) need 6 (3 x m5.large (2 vCPUs)); 4 left (quota L-1216C47A 6 minus 2 in use). "
        "Fix: stop or terminate instances nobody uses"
    ) in str(raised.value)
    assert sent == [{"ServiceCode": "ec2", "QuotaCode": "L-1216C47A"}]
    assert len(live_instances(ec2)) == 1


def test_install_refuses_the_vcpu_shortfall_before_launching(deploy, ec2, monkeypatch, capsys):
    hook_quotas_client(monkeypatch, vcpu_quota(4))
    with pytest.raises(WorkflowFailed):
        deploy(servers(3)).install()
    assert "need 6 (3 x m5.large (2 vCPUs)); 4 left (quota L-1216C47A 4 minus 0 in use)" in capsys.readouterr().out
    assert live_instances(ec2) == []


def test_vcpus_within_the_quota_pass(deploy, monkeypatch):
    hook_quotas_client(monkeypatch, vcpu_quota(6))
    deploy(servers(3)).execute("aws_preflight")


def test_vcpus_count_against_their_familys_quota(deploy, monkeypatch):
    sent = hook_quotas_client(monkeypatch, vcpu_quota(64))
    nodes = {**servers(1, "m5.large"), "gpu": instance_node(instance_type="g4dn.xlarge")}
    deploy(nodes).execute("aws_preflight")
    assert sorted(params["QuotaCode"] for params in sent) == ["L-1216C47A", "L-DB2E81BA"]


def test_vcpus_that_cannot_be_read_are_a_warning(deploy, capsys):
    # moto's Service Quotas knows no EC2 quota: it answers NoSuchResourceException.
    deploy(servers(3)).execute("aws_preflight")
    assert (
        "WARNING: aws_preflight: quota not checked: vCPUs of Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) "
        "instances (L-1216C47A) could not be checked (GetServiceQuota answered NoSuchResourceException); "
        "node 'server' (3 instances) launch 3 instance(s) of m5.large"
    ) in capsys.readouterr().out


def test_vcpus_refused_to_the_credentials_name_the_permission(deploy, monkeypatch, capsys):
    hook_quotas_client(monkeypatch, refused)
    deploy(servers(1)).execute("aws_preflight")
    assert "(AccessDeniedException: allow servicequotas:GetServiceQuota to these credentials)" in (
        capsys.readouterr().out
    )


def test_external_instances_launch_nothing_and_are_not_counted(deploy, ec2, monkeypatch):
    sent = hook_quotas_client(monkeypatch, vcpu_quota(0))
    (instance,) = ec2.run_instances(ImageId=IMAGE_ID, InstanceType="m5.large", MinCount=1, MaxCount=1)["Instances"]
    node = instance_node(use_external_resource=True, resource_id=instance["InstanceId"])
    deploy({"server": node}).execute("aws_preflight")
    assert sent == []


# --- rules per group, groups per interface --------------------------------------------------


def test_a_group_with_61_rules_is_refused_by_the_accounts_quota(deploy, ec2):
    refusal = preflight_refusal(deploy(group_with_rules(61)))
    assert (
        "- quota: rules per security group: node 'group' needs 61 inbound rules ('rules'); a group takes 60 "
        "(the account's quota L-0EA8095F). Fix: split the rules over more groups, or ask AWS for more "
        "(Service Quotas, L-0EA8095F)\n"
    ) in refusal + "\n"
    assert_nothing_left(ec2)


def test_install_refuses_61_egress_rules_before_creating_the_group(deploy, ec2, capsys):
    with pytest.raises(WorkflowFailed):
        deploy(group_with_rules(61, "egress_rules")).install()
    assert "node 'group' needs 61 outbound rules ('egress_rules')" in capsys.readouterr().out
    assert_nothing_left(ec2)


def test_sixty_rules_need_no_quota_call(deploy, monkeypatch):
    sent = hook_quotas_client(monkeypatch, refused)
    deploy(group_with_rules(60)).execute("aws_preflight")
    assert sent == []


def test_rules_whose_quota_cannot_be_read_are_compared_with_the_documented_default_and_say_so(
    deploy, monkeypatch, capsys
):
    hook_quotas_client(monkeypatch, refused)
    refusal = preflight_refusal(deploy(group_with_rules(61)))
    assert (
        "a group takes 60 (the documented default; the account's quota L-0EA8095F could not be read). Fix: split "
        "the rules over more groups, or ask AWS for more (Service Quotas, L-0EA8095F), or allow "
        "servicequotas:GetServiceQuota if the account has more"
    ) in refusal
    assert (
        "quota not checked: inbound or outbound rules per group (L-0EA8095F) could not be read "
        "(AccessDeniedException: allow servicequotas:GetServiceQuota to these credentials); compared with the "
        "documented default 60"
    ) in capsys.readouterr().out


def test_an_instance_in_six_groups_is_refused(deploy, ec2):
    groups = {f"group{n}": {"type": SECURITY_GROUP, "properties": {"description": "one"}} for n in range(6)}
    server = instance_node(*((TO_GROUP, name) for name in groups))
    with pytest.raises(NonRecoverableError) as raised:
        deploy({**groups, "server": server}).execute("aws_preflight")
    assert (
        "- quota: security groups per network interface: node 'server' gives its instances 6 groups; an interface "
        "takes 5 (the account's quota L-2AFB9258)."
    ) in str(raised.value)


# --- the plan ---------------------------------------------------------------------------------


def test_the_plan_leaves_out_external_resources_and_spot_instances():
    members = [
        quotas.Member("ip", "ip_1", (ELASTIC_IP,), {}),
        quotas.Member("old", "old_1", (ELASTIC_IP,), {"use_external_resource": True, "resource_id": "1.2.3.4"}),
        quotas.Member("vm", "vm_1", (constants.INSTANCE,), {"image_id": IMAGE_ID, "instance_type": "t3.micro"}),
        quotas.Member(
            "spot",
            "spot_1",
            (constants.INSTANCE,),
            {
                "image_id": IMAGE_ID,
                "instance_type": "t3.micro",
                "parameters": {"InstanceMarketOptions": {"MarketType": "spot"}},
            },
        ),
    ]
    (plan,) = quotas.plan_of(members).values()
    assert plan.addresses == [("ip", "ip_1")]
    assert dict(plan.instances) == {"t3.micro": [("vm", "vm_1")]}


def test_each_region_is_planned_apart():
    members = [
        quotas.Member("east", "east_1", (ELASTIC_IP,), {"aws_config": {"region_name": "us-east-1"}}),
        quotas.Member("west", "west_1", (ELASTIC_IP,), {"aws_config": {"region_name": "us-west-2"}}),
    ]
    assert sorted(plan.addresses[0][0] for plan in quotas.plan_of(members).values()) == ["east", "west"]


@pytest.mark.parametrize(
    "instance_type, quota",
    [
        ("t3.micro", "L-1216C47A"),
        ("im4gn.large", "L-1216C47A"),
        ("g4dn.xlarge", "L-DB2E81BA"),
        ("vt1.3xlarge", "L-DB2E81BA"),
        ("inf2.xlarge", "L-1945791B"),
        ("trn1n.32xlarge", "L-2C3B7624"),
        ("u-6tb1.metal", "L-43DA4232"),
        ("x2idn.large", "L-7295265B"),
    ],
)
def test_each_family_counts_against_its_on_demand_quota(instance_type, quota):
    assert quotas.VCPU_QUOTAS[quotas.quota_of(instance_type)][0] == quota


def test_a_family_without_a_known_quota_is_reported_as_not_checked(ec2):
    plan = quotas.Plan(instances={"mac1.metal": [("mac", "mac_1")]})
    report = quotas.check(plan, ec2, _no_quotas_client, "dep")
    assert report.shortfalls == []
    assert report.unchecked == [
        "vCPUs of mac1.metal could not be checked (no known On-Demand quota for its family); "
        "node 'mac' (1 instance) launch 1"
    ]


class _KeyPairs:
    """An EC2 client stub that lists ``count`` key pairs, none of them the deployment's."""

    def __init__(self, count: int) -> None:
        self.count = count

    def describe_key_pairs(self):
        return {"KeyPairs": [{"KeyName": f"k{n}"} for n in range(self.count)]}


def test_key_pairs_past_the_5000_of_a_region_are_a_shortfall():
    plan = quotas.Plan(key_pairs=[("key", "key_1"), ("key", "key_2")])
    assert quotas.check(plan, _KeyPairs(4998), _no_quotas_client, "dep") == quotas.Report()
    (line,) = quotas.check(plan, _KeyPairs(4999), _no_quotas_client, "dep").shortfalls
    assert line.startswith(
        "key pairs: node 'key' (2 instances) create 2; 1 left (a region holds 5000, 4999 in use). Fix: "
    )


def test_a_deployment_of_one_group_makes_no_quota_call(deploy, calls):
    deploy({"group": {"type": SECURITY_GROUP, "properties": {"description": "one", "rules": rules(2)}}}).install()
    assert not {"DescribeAccountAttributes", "DescribeAddresses", "DescribeKeyPairs"} & set(calls.operations)


def test_validation_checks_the_deployment_once_per_execution(make_ctx, monkeypatch):
    checked: list[str] = []
    monkeypatch.setattr(deployment, "deployment_quotas", lambda members, _id: checked.append("x") or quotas.Report())
    for _ in range(3):
        ctx = make_ctx({}, node_id="ip", execution_id="run-1")
        deployment.check_deployment_quotas(ctx)
    assert checked == ["x"]


class _Page(list):
    """A page of a REST listing, with the total the service reports."""

    def __init__(self, items: list, total: int) -> None:
        super().__init__(items)
        self.metadata = SimpleNamespace(pagination=SimpleNamespace(total=total))


class _Listing:
    def __init__(self, items: list) -> None:
        self.items = items
        self.asked: list[dict] = []

    def list(self, _offset: int, _size: int, **filters):
        self.asked.append({"_offset": _offset, **filters})
        return _Page(self.items[_offset : _offset + _size], len(self.items))


def test_on_a_manager_the_deployment_is_read_from_the_rest_service_page_by_page(make_ctx, monkeypatch):
    monkeypatch.setattr(deployment, "REST_PAGE_SIZE", 2)
    nodes = _Listing([{"id": "ip", "type": ELASTIC_IP, "type_hierarchy": [ELASTIC_IP], "properties": {}}])
    instances = _Listing([{"id": f"ip_{n}", "node_id": "ip"} for n in range(3)])
    ctx = make_ctx({}, node_id="ip")
    ctx._endpoint = SimpleNamespace(rest_client=SimpleNamespace(nodes=nodes, node_instances=instances))
    alone = quotas.Member("ip", "ip_alone", (ELASTIC_IP,), {})
    members, partial = deployment._deployment_members(ctx._endpoint, ctx.deployment.id, alone)
    assert partial == ""
    assert [member.instance_id for member in members] == ["ip_0", "ip_1", "ip_2"]
    assert nodes.asked == [{"_offset": 0, "deployment_id": "dep", "evaluate_functions": True}]
    assert [asked["_offset"] for asked in instances.asked] == [0, 2]


def _no_quotas_client():
    raise AssertionError("no Service Quotas call was expected")
