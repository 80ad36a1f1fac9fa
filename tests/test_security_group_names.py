"""Group names wherever the classic plugin took them: an Instance's
parameters.security_groups (the classic boto 2 key), looked up in the
instance's own VPC at create time and sent as ids, and a SecurityGroup's
rules[].src_group_id, looked up in the group's own VPC; against the moto server."""

from __future__ import annotations

import pytest
from cloudify.exceptions import NonRecoverableError

from ec2 import aws, connection, instance, instance_request, securitygroup
from tests.support import IMAGE_ID

NO_AGENT = {"install_method": "none"}


@pytest.fixture
def server_ctx(make_ctx):
    """An Instance node's context with the given parameters."""

    def build(**parameters):
        return make_ctx(
            {
                "image_id": IMAGE_ID,
                "instance_type": "t3.micro",
                "parameters": parameters,
                "agent_config": NO_AGENT,
                "wait_timeout": 30,
                "wait_interval": 0,
            },
            node_id="server",
            instance_id="server_abc123",
        )

    return build


def default_vpc(ec2) -> str:
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    return vpc["VpcId"]


def new_vpc_and_subnet(ec2, cidr: str) -> tuple[str, str]:
    vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr)["Subnet"]["SubnetId"]
    return vpc_id, subnet_id


def group(ec2, name: str, vpc_id: str) -> str:
    return ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc_id)["GroupId"]


def launched(ec2) -> list[dict]:
    states = ["pending", "running", "stopping", "stopped"]
    found = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": states}])
    return [one for reservation in found["Reservations"] for one in reservation["Instances"]]


def group_ids_of(ec2) -> list[str]:
    (server,) = launched(ec2)
    return sorted(one["GroupId"] for one in server["SecurityGroups"])


def resolved_request(ctx) -> dict:
    spec = instance_request.parse(ctx.node.properties)
    client = connection.ec2_client(spec.common.aws_config)
    return instance_request.build_request(
        instance_request.read(ctx), instance_request.resolve_security_groups(client, spec)
    )


def refusal(operation, ctx) -> str:
    with pytest.raises(NonRecoverableError) as error:
        operation(ctx=ctx)
    return str(error.value)


# --- resolving ------------------------------------------------------------------


def test_a_group_name_is_launched_as_the_id_of_that_group_in_the_default_vpc(server_ctx, ec2):
    web = group(ec2, "web", default_vpc(ec2))
    instance.run_instances(ctx=server_ctx(security_groups=["web"]))
    assert group_ids_of(ec2) == [web]


def test_the_request_carries_ids_only_never_names(server_ctx, ec2):
    web = group(ec2, "web", default_vpc(ec2))
    request = resolved_request(server_ctx(security_groups=["web"]))
    assert "SecurityGroups" not in request
    assert request["SecurityGroupIds"] == [web]


def test_ids_in_security_groups_pass_through_beside_resolved_names(server_ctx, ec2):
    vpc_id = default_vpc(ec2)
    web, db, admin = group(ec2, "web", vpc_id), group(ec2, "db", vpc_id), group(ec2, "admin", vpc_id)
    ctx = server_ctx(security_groups=["web", db], security_group_ids=[admin])
    assert sorted(resolved_request(ctx)["SecurityGroupIds"]) == sorted([admin, web, db])
    instance.run_instances(ctx=ctx)
    assert group_ids_of(ec2) == sorted([web, db, admin])


def test_a_name_is_looked_up_in_the_vpc_of_the_subnet_not_the_default_vpc(server_ctx, ec2):
    group(ec2, "web", default_vpc(ec2))
    vpc_id, subnet_id = new_vpc_and_subnet(ec2, "10.20.0.0/24")
    own_web = group(ec2, "web", vpc_id)
    instance.run_instances(ctx=server_ctx(security_groups=["web"], subnet_id=subnet_id))
    assert group_ids_of(ec2) == [own_web]


def test_all_names_are_looked_up_in_one_describe(server_ctx, ec2, calls):
    vpc_id = default_vpc(ec2)
    group(ec2, "web", vpc_id), group(ec2, "db", vpc_id)
    resolved_request(server_ctx(security_groups=["web", "db"]))
    assert calls.operations.count("DescribeSecurityGroups") == 1


def test_without_names_nothing_is_looked_up(server_ctx, ec2, calls):
    resolved_request(server_ctx(security_group_ids=[group(ec2, "web", default_vpc(ec2))]))
    assert calls.operations == []


# --- refusing -------------------------------------------------------------------


def test_a_name_found_in_no_vpc_fails_naming_the_property_the_vpc_and_the_fix(server_ctx, ec2):
    message = refusal(instance.run_instances, server_ctx(security_groups=["nowhere"]))
    assert "'server'" in message and "parameters.security_groups" in message and "'nowhere'" in message
    assert default_vpc(ec2) in message and "depends_on" in message
    assert launched(ec2) == []


def test_a_name_only_in_two_other_vpcs_fails_naming_both_vpcs(server_ctx, ec2):
    first, _ = new_vpc_and_subnet(ec2, "10.30.0.0/24")
    second, _ = new_vpc_and_subnet(ec2, "10.40.0.0/24")
    group(ec2, "web", first), group(ec2, "web", second)
    message = refusal(instance.run_instances, server_ctx(security_groups=["web"]))
    assert "parameters.security_groups" in message and first in message and second in message
    assert f"the default VPC {default_vpc(ec2)}" in message and "parameters.subnet_id" in message
    assert launched(ec2) == []


def test_a_name_in_the_default_vpc_is_not_found_for_an_instance_in_another_vpcs_subnet(server_ctx, ec2):
    vpc_id = default_vpc(ec2)
    group(ec2, "web", vpc_id)
    own_vpc, subnet_id = new_vpc_and_subnet(ec2, "10.50.0.0/24")
    message = refusal(instance.run_instances, server_ctx(security_groups=["web"], subnet_id=subnet_id))
    assert f"VPC {own_vpc} (of subnet {subnet_id})" in message and f"'web' is in {vpc_id}" in message
    assert launched(ec2) == []


def test_names_with_a_subnet_that_does_not_exist_fail_naming_subnet_id(server_ctx, ec2):
    group(ec2, "web", default_vpc(ec2))
    message = refusal(instance.run_instances, server_ctx(security_groups=["web"], subnet_id="subnet-0123abcd"))
    assert "parameters.subnet_id" in message and "subnet-0123abcd" in message
    assert launched(ec2) == []


def test_names_without_a_subnet_in_a_region_without_a_default_vpc_fail_naming_subnet_id(server_ctx, ec2, monkeypatch):
    monkeypatch.setattr(aws, "default_vpc_id", lambda _client: None)
    message = refusal(instance.run_instances, server_ctx(security_groups=["web"]))
    assert "parameters.security_groups" in message and "no default VPC" in message
    assert "parameters.subnet_id" in message
    assert launched(ec2) == []


# --- validation checks the same ---------------------------------------------------


def test_validation_passes_when_every_name_resolves(server_ctx, ec2, calls):
    group(ec2, "web", default_vpc(ec2))
    instance.creation_validation(ctx=server_ctx(security_groups=["web"]))
    assert calls.dry_runs == ["RunInstances"]
    assert calls.mutating == []
    assert launched(ec2) == []


def test_validation_refuses_a_name_found_in_no_vpc(server_ctx, ec2):
    message = refusal(instance.creation_validation, server_ctx(security_groups=["nowhere"]))
    assert "parameters.security_groups" in message and "'nowhere'" in message and default_vpc(ec2) in message


def test_validation_refuses_a_name_that_is_only_in_another_vpc(server_ctx, ec2):
    other, _ = new_vpc_and_subnet(ec2, "10.60.0.0/24")
    group(ec2, "web", other)
    message = refusal(instance.creation_validation, server_ctx(security_groups=["web"]))
    assert "parameters.security_groups" in message and other in message


# --- a group of the same deployment ----------------------------------------------------

BLUEPRINT = f"""
web:
  type: cloudify.aws.nodes.SecurityGroup
  properties:
    resource_id: names-web
    description: web servers
    rules:
      - {{ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ip: 0.0.0.0/0}}
server:
  type: cloudify.aws.nodes.Instance
  properties:
    image_id: {IMAGE_ID}
    instance_type: t3.micro
    agent_config: {{install_method: none}}
    parameters:
      security_groups: [names-web]
  relationships:
    - type: cloudify.relationships.depends_on
      target: web
"""


def test_a_group_created_earlier_in_the_same_deployment_resolves_by_name(deploy, ec2):
    deployment = deploy(BLUEPRINT)
    deployment.install()
    assert group_ids_of(ec2) == [deployment.runtime("web")["aws_resource_id"]]
    deployment.uninstall()
    assert launched(ec2) == []
    assert [one["GroupName"] for one in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]


def test_preflight_accepts_a_group_name_that_install_creates_first(deploy, ec2):
    deployment = deploy(BLUEPRINT)
    deployment.execute("aws_preflight")
    assert [one["GroupName"] for one in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]


# --- names in rules[].src_group_id ------------------------------------------------------


def group_ctx(make_ctx, **properties):
    return make_ctx(
        {"description": "", "rules": [], "egress_rules": [], "vpc_id": "", **properties},
        node_id="db",
        instance_id="db_abc123",
    )


def rule_from(source: str) -> list[dict]:
    return [{"ip_protocol": "tcp", "from_port": 5432, "to_port": 5432, "src_group_id": source}]


def test_a_rule_naming_a_group_admits_that_group_of_the_same_vpc(make_ctx, ec2):
    group(ec2, "web", new_vpc_and_subnet(ec2, "10.70.0.0/24")[0])
    web = group(ec2, "web", default_vpc(ec2))
    ctx = group_ctx(make_ctx, resource_id="db", rules=rule_from("web"))
    securitygroup.create(ctx=ctx)
    (created,) = ec2.describe_security_groups(GroupIds=[ctx.instance.runtime_properties["aws_resource_id"]])[
        "SecurityGroups"
    ]
    assert [pair["GroupId"] for pair in created["IpPermissions"][0]["UserIdGroupPairs"]] == [web]


def test_a_rule_naming_a_group_only_in_other_vpcs_fails_naming_them(make_ctx, ec2):
    first, second = new_vpc_and_subnet(ec2, "10.80.0.0/24")[0], new_vpc_and_subnet(ec2, "10.90.0.0/24")[0]
    group(ec2, "web", first), group(ec2, "web", second)
    message = refusal(securitygroup.create, group_ctx(make_ctx, resource_id="db", rules=rule_from("web")))
    assert "rules[0].src_group_id" in message and first in message and second in message
    assert default_vpc(ec2) in message and "depends_on" in message
    assert "db" not in [one["GroupName"] for one in ec2.describe_security_groups()["SecurityGroups"]]
