"""cloudify.aws.nodes.SecurityGroup, operation by operation, against the moto server."""

import boto3
import pytest
from botocore.stub import Stubber
from cloudify.exceptions import NonRecoverableError, RecoverableError

from ec2 import aws, connection, securitygroup
from tests.support import interrupted_create, made_long_ago, owned_by

SSH = {"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ip": "0.0.0.0/0"}
HTTP = {"ip_protocol": "tcp", "from_port": 80, "to_port": 80, "cidr_ip": "10.0.0.0/8"}


def group_ctx(make_ctx, runtime_properties=None, **properties):
    defaults = {"description": "", "rules": [], "egress_rules": [], "vpc_id": ""}
    return make_ctx(
        {**defaults, **properties},
        node_id="group",
        instance_id="group_1a2b",
        deployment_id="dep",
        runtime_properties=runtime_properties,
    )


def created_group(ec2, ctx):
    group_id = ctx.instance.runtime_properties["aws_resource_id"]
    return ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]


def default_vpc(ec2):
    return ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]


def non_default_groups(ec2):
    return [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]


# --- create -----------------------------------------------------------------


def test_the_group_name_is_resource_id(make_ctx, ec2):
    ctx = group_ctx(make_ctx, resource_id="web")
    securitygroup.create(ctx=ctx)
    assert created_group(ec2, ctx)["GroupName"] == "web"


def test_without_resource_id_a_unique_name_is_generated(make_ctx, ec2):
    ctx = group_ctx(make_ctx)
    securitygroup.create(ctx=ctx)
    assert created_group(ec2, ctx)["GroupName"] == "dep-group_1a2b"


def test_an_empty_description_gets_a_sensible_default(make_ctx, ec2):
    ctx = group_ctx(make_ctx)
    securitygroup.create(ctx=ctx)
    assert created_group(ec2, ctx)["Description"] == "Cloudify security group for node group of deployment dep"


def test_the_group_goes_in_the_default_vpc_unless_told_otherwise(make_ctx, ec2):
    ctx = group_ctx(make_ctx)
    securitygroup.create(ctx=ctx)
    assert created_group(ec2, ctx)["VpcId"] == default_vpc(ec2)


def test_vpc_id_places_the_group_in_that_vpc(make_ctx, ec2):
    vpc_id = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    ctx = group_ctx(make_ctx, vpc_id=vpc_id)
    securitygroup.create(ctx=ctx)
    assert created_group(ec2, ctx)["VpcId"] == vpc_id


def test_tags_go_inline_with_the_create_call(make_ctx, ec2, calls):
    ctx = group_ctx(make_ctx, tags={"team": "qa"})
    securitygroup.create(ctx=ctx)
    assert {"Key": "team", "Value": "qa"} in created_group(ec2, ctx)["Tags"]
    assert "CreateTags" not in calls.operations


def test_all_rules_are_authorised_in_one_call(make_ctx, ec2, calls):
    ctx = group_ctx(make_ctx, rules=[SSH, HTTP])
    securitygroup.create(ctx=ctx)
    assert calls.operations.count("AuthorizeSecurityGroupIngress") == 1
    assert sorted(p["FromPort"] for p in created_group(ec2, ctx)["IpPermissions"]) == [22, 80]


def test_a_rule_may_name_a_source_group(make_ctx, ec2):
    source = ec2.create_security_group(GroupName="lb", Description="lb")["GroupId"]
    ctx = group_ctx(
        make_ctx, rules=[{"ip_protocol": "tcp", "from_port": 8080, "to_port": 8080, "src_group_id": source}]
    )
    securitygroup.create(ctx=ctx)
    (permission,) = created_group(ec2, ctx)["IpPermissions"]
    assert permission["UserIdGroupPairs"][0]["GroupId"] == source


def test_an_ipv6_cidr_becomes_an_ipv6_range(make_ctx, ec2):
    ctx = group_ctx(make_ctx, rules=[{"ip_protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_ip": "::/0"}])
    securitygroup.create(ctx=ctx)
    (permission,) = created_group(ec2, ctx)["IpPermissions"]
    assert permission["Ipv6Ranges"] == [{"CidrIpv6": "::/0"}]


def test_egress_rules_are_authorised_too(make_ctx, ec2):
    ctx = group_ctx(
        make_ctx, egress_rules=[{"ip_protocol": "tcp", "from_port": 5432, "to_port": 5432, "cidr_ip": "10.1.0.0/16"}]
    )
    securitygroup.create(ctx=ctx)
    ports = [p.get("FromPort") for p in created_group(ec2, ctx)["IpPermissionsEgress"]]
    assert 5432 in ports


def test_when_authorising_fails_the_group_is_deleted(make_ctx, ec2):
    missing_source = {"ip_protocol": "tcp", "from_port": 1, "to_port": 2, "src_group_id": "sg-12345678"}
    ctx = group_ctx(make_ctx, resource_id="doomed", rules=[missing_source])
    with pytest.raises(NonRecoverableError, match="InvalidGroup.NotFound"):
        securitygroup.create(ctx=ctx)
    assert non_default_groups(ec2) == []
    assert "aws_resource_id" not in ctx.instance.runtime_properties


def test_a_rerun_after_an_interrupted_create_replaces_the_half_made_group(make_ctx, ec2):
    ctx = group_ctx(make_ctx, resource_id="web", rules=[SSH])
    interrupted_create(ctx)
    ec2.create_security_group(
        GroupName="web",
        Description="half made",
        TagSpecifications=owned_by(ctx, "security-group", "web"),
    )
    securitygroup.create(ctx=ctx)
    assert non_default_groups(ec2) == ["web"]
    assert len(created_group(ec2, ctx)["IpPermissions"]) == 1


# --- rules are validated before anything is created ---------------------------


@pytest.mark.parametrize(
    "rule, mentioned",
    [
        ({"ip_protocol": "tcpp", "from_port": 1, "to_port": 2, "cidr_ip": "0.0.0.0/0"}, "ip_protocol"),
        ({"ip_protocol": "tcp", "from_port": 70000, "to_port": 70000, "cidr_ip": "0.0.0.0/0"}, "from_port"),
        ({"ip_protocol": "tcp", "from_port": "ssh", "to_port": 22, "cidr_ip": "0.0.0.0/0"}, "from_port"),
        ({"ip_protocol": "tcp", "from_port": 80, "to_port": 22, "cidr_ip": "0.0.0.0/0"}, "above to_port"),
        ({"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ip": "300.0.0.0/8"}, "cidr_ip"),
        ({"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ip": "10.0.0.1/8"}, "10.0.0.0/8"),
        ({"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ip": "10.0.0.1"}, "cidr_ip"),
        ({"ip_protocol": "tcp", "from_port": 22, "to_port": 22}, "exactly one of cidr_ip or src_group_id"),
        (
            {
                "ip_protocol": "tcp",
                "from_port": 22,
                "to_port": 22,
                "cidr_ip": "0.0.0.0/0",
                "src_group_id": "sg-12345678",
            },
            "exactly one of cidr_ip or src_group_id",
        ),
        ({"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "src_group_id": "web"}, "src_group_id"),
        ({"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "0.0.0.0/0"}, "unknown key"),
        ("tcp:22", "not a dictionary"),
    ],
)
def test_an_invalid_rule_is_refused_before_the_group_is_created(make_ctx, calls, rule, mentioned):
    ctx = group_ctx(make_ctx, rules=[SSH, rule])
    with pytest.raises(NonRecoverableError) as error:
        securitygroup.create(ctx=ctx)
    message = str(error.value)
    assert mentioned in message
    assert "node 'group'" in message and "rules[1]" in message and "Fix:" in message
    assert calls.mutating == []


def test_an_invalid_egress_rule_is_refused_before_the_group_is_created(make_ctx, calls):
    ctx = group_ctx(
        make_ctx, egress_rules=[{"ip_protocol": "udp", "from_port": -5, "to_port": 5, "cidr_ip": "0.0.0.0/0"}]
    )
    with pytest.raises(NonRecoverableError, match=r"egress_rules\[0\]"):
        securitygroup.create(ctx=ctx)
    assert calls.mutating == []


@pytest.mark.parametrize(
    "rule, expected",
    [
        (
            {"ip_protocol": "icmp", "from_port": -1, "to_port": -1, "cidr_ip": "0.0.0.0/0"},
            {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1},
        ),
        ({"ip_protocol": "-1", "cidr_ip": "0.0.0.0/0"}, {"IpProtocol": "-1"}),
        ({"ip_protocol": "all", "cidr_ip": "0.0.0.0/0"}, {"IpProtocol": "-1"}),
        (
            {"ip_protocol": 6, "from_port": "22", "to_port": "23", "cidr_ip": "0.0.0.0/0"},
            {"IpProtocol": "6", "FromPort": 22, "ToPort": 23},
        ),
        (
            {"ip_protocol": "TCP", "from_port": 0, "to_port": 65535, "cidr_ip": "0.0.0.0/0"},
            {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535},
        ),
    ],
)
def test_protocols_by_name_or_number_are_accepted(make_ctx, rule, expected):
    (parsed,) = securitygroup.parse_rules({"rules": [rule]}, "rules")
    assert {k: v for k, v in parsed.permission.items() if k in expected} == expected


# --- external -----------------------------------------------------------------


def test_an_external_group_is_found_by_id(make_ctx, ec2, calls):
    group_id = ec2.create_security_group(GroupName="existing", Description="x")["GroupId"]
    ctx = group_ctx(make_ctx, use_external_resource=True, resource_id=group_id)
    securitygroup.create(ctx=ctx)
    assert ctx.instance.runtime_properties["aws_resource_id"] == group_id
    assert calls.mutating == []


def test_an_external_group_is_found_by_name_in_the_vpc(make_ctx, ec2):
    group_id = ec2.create_security_group(GroupName="existing", Description="x")["GroupId"]
    ctx = group_ctx(make_ctx, use_external_resource=True, resource_id="existing")
    securitygroup.create(ctx=ctx)
    assert ctx.instance.runtime_properties["aws_resource_id"] == group_id


def test_an_external_group_that_does_not_exist_fails(make_ctx):
    ctx = group_ctx(make_ctx, use_external_resource=True, resource_id="sg-0123456789abcdef0")
    with pytest.raises(NonRecoverableError, match="does not exist"):
        securitygroup.create(ctx=ctx)


def test_delete_never_deletes_an_external_group(make_ctx, ec2):
    ec2.create_security_group(GroupName="existing", Description="x")
    ctx = group_ctx(make_ctx, use_external_resource=True, resource_id="existing")
    securitygroup.create(ctx=ctx)
    securitygroup.delete(ctx=ctx)
    assert non_default_groups(ec2) == ["existing"]
    assert "aws_resource_id" not in ctx.instance.runtime_properties


# --- delete -------------------------------------------------------------------


def test_delete_removes_the_group(make_ctx, ec2):
    ctx = group_ctx(make_ctx, rules=[SSH])
    securitygroup.create(ctx=ctx)
    securitygroup.delete(ctx=ctx)
    assert non_default_groups(ec2) == []
    assert ctx.instance.runtime_properties == {}


def test_delete_of_a_group_already_gone_counts_as_done(make_ctx, ec2):
    ctx = group_ctx(make_ctx)
    securitygroup.create(ctx=ctx)
    made_long_ago(ctx.instance.runtime_properties)  # within its propagation window, delete would wait
    ec2.delete_security_group(GroupId=ctx.instance.runtime_properties["aws_resource_id"])
    securitygroup.delete(ctx=ctx)
    assert ctx.instance.runtime_properties == {}


def stubbed_client(monkeypatch, *answers: str):
    """A client whose DeleteSecurityGroup gives these answers in turn: an error code, or "ok"."""
    client = boto3.client("ec2", region_name="us-east-1")
    stubber = Stubber(client)
    for answer in answers:
        if answer == "ok":
            stubber.add_response("delete_security_group", {}, {"GroupId": "sg-12345678"})
        else:
            stubber.add_client_error("delete_security_group", service_error_code=answer, http_status_code=400)
    stubber.activate()
    monkeypatch.setattr(connection, "ec2_client", lambda aws_config: client)
    monkeypatch.setattr(aws.time, "sleep", lambda _seconds: None)
    return stubber


def test_a_dependency_violation_on_delete_is_asked_again_until_the_group_is_free(make_ctx, monkeypatch):
    stubber = stubbed_client(monkeypatch, "DependencyViolation", "DependencyViolation", "ok")
    ctx = group_ctx(make_ctx, runtime_properties={"aws_resource_id": "sg-12345678"})
    securitygroup.delete(ctx=ctx)
    stubber.assert_no_pending_responses()
    assert "aws_resource_id" not in ctx.instance.runtime_properties


def test_a_dependency_violation_that_outlasts_the_propagation_timeout_is_a_retry_not_a_failure(make_ctx, monkeypatch):
    stubbed_client(monkeypatch, "DependencyViolation")
    ctx = group_ctx(
        make_ctx, runtime_properties={"aws_resource_id": "sg-12345678"}, aws_config={"propagation_timeout": 0}
    )
    with pytest.raises(RecoverableError, match="DependencyViolation"):
        securitygroup.delete(ctx=ctx)
    assert ctx.instance.runtime_properties["aws_resource_id"] == "sg-12345678"


# --- creation_validation --------------------------------------------------------


def test_validation_of_a_new_group_fails_when_the_name_is_taken(make_ctx, ec2):
    ec2.create_security_group(GroupName="web", Description="x")
    with pytest.raises(NonRecoverableError, match="already exists"):
        securitygroup.creation_validation(ctx=group_ctx(make_ctx, resource_id="web"))


def test_validation_of_a_new_group_passes_when_the_name_is_free(make_ctx, calls, ec2):
    securitygroup.creation_validation(ctx=group_ctx(make_ctx, resource_id="web", rules=[SSH]))
    assert calls.dry_runs == ["CreateSecurityGroup"]
    assert calls.mutating == []
    assert [group["GroupName"] for group in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]


def test_validation_of_an_external_group_fails_when_it_does_not_exist(make_ctx):
    with pytest.raises(NonRecoverableError, match="does not exist"):
        securitygroup.creation_validation(ctx=group_ctx(make_ctx, use_external_resource=True, resource_id="nope"))


def test_validation_checks_the_rules(make_ctx, calls):
    with pytest.raises(NonRecoverableError, match="from_port"):
        securitygroup.creation_validation(ctx=group_ctx(make_ctx, rules=[{**SSH, "from_port": None}]))


def test_delete_after_a_create_that_died_before_recording_finds_the_group_by_its_tags(make_ctx, ec2):
    ctx = group_ctx(make_ctx)
    interrupted_create(ctx)
    ec2.create_security_group(GroupName="orphan", Description="x", TagSpecifications=owned_by(ctx, "security-group"))
    securitygroup.delete(ctx=ctx)
    assert non_default_groups(ec2) == []


def test_when_the_cleanup_after_a_refused_rule_fails_the_group_stays_recorded(make_ctx, ec2, monkeypatch):
    ctx = group_ctx(make_ctx, rules=[SSH])

    def refused(client, group_id, permissions, egress=False, **_):
        client.authorize_security_group_ingress(GroupId="sg-12345678", IpPermissions=permissions)

    def cleanup_fails(client, group_id, **_):
        raise RuntimeError("endpoint went away")

    monkeypatch.setattr(aws, "authorize", refused)
    monkeypatch.setattr(aws, "delete_security_group", cleanup_fails)
    with pytest.raises(NonRecoverableError, match="InvalidGroup.NotFound"):
        securitygroup.create(ctx=ctx)
    assert ctx.instance.runtime_properties["aws_resource_id"].startswith("sg-")


def test_an_external_group_by_name_is_looked_up_in_the_nodes_vpc_only(make_ctx, ec2):
    other_vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    ec2.create_security_group(GroupName="shared-name", Description="x", VpcId=other_vpc)
    mine = ec2.create_security_group(GroupName="shared-name", Description="x")["GroupId"]
    ctx = group_ctx(make_ctx, use_external_resource=True, resource_id="shared-name")
    securitygroup.create(ctx=ctx)
    assert ctx.instance.runtime_properties["aws_resource_id"] == mine


def test_validation_accepts_the_group_an_interrupted_create_of_this_node_instance_left(make_ctx, ec2):
    ctx = group_ctx(make_ctx, resource_id="web")
    interrupted_create(ctx)
    ec2.create_security_group(
        GroupName="web", Description="x", TagSpecifications=owned_by(ctx, "security-group", "web")
    )
    securitygroup.creation_validation(ctx=ctx)
    securitygroup.create(ctx=ctx)
    assert non_default_groups(ec2) == ["web"]
