"""The aws_preflight workflow and the dry runs of validation.create, on the
moto server (which answers dry runs with DryRunOperation): every problem of
the reference topology in one error, nothing created, and AWS's refusal
(UnauthorizedOperation) reported before anything exists."""

from __future__ import annotations

import pytest
import yaml
from botocore.exceptions import ClientError
from cloudify.exceptions import NonRecoverableError, WorkflowFailed

from ec2 import aws, errors
from ec2.errors import PluginError
from tests.support import IMAGE_ID, PLUGIN_YAML, ROOT, CallRecorder, hook_clients

WRONG_IMAGE = "ami-0badbadbadbadbad0"
SSH = {"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ip": "0.0.0.0/0"}
HTTP = {"ip_protocol": "tcp", "from_port": 80, "to_port": 80, "cidr_ip": "0.0.0.0/0"}
BAD_RULE = {"ip_protocol": "tcp", "from_port": 80, "to_port": 80, "cidr_ip": "10.0.0.1/8"}
CREATES = {"CreateKeyPair", "CreateSecurityGroup", "AllocateAddress", "RunInstances"}


def topology(tmp_path, image_id: str = IMAGE_ID, rules: list | None = None) -> dict:
    """The reference topology: a key pair, a group with two rules, an instance
    connected to both, and an elastic IP connected to the instance."""
    return {
        "keypair": {
            "type": "cloudify.aws.nodes.KeyPair",
            "properties": {"private_key_path": str(tmp_path / "keys" / "example.pem")},
        },
        "security_group": {
            "type": "cloudify.aws.nodes.SecurityGroup",
            "properties": {"description": "ssh and http", "rules": rules or [SSH, HTTP]},
        },
        "elastic_ip": {"type": "cloudify.aws.nodes.ElasticIP"},
        "vm": {
            "type": "cloudify.aws.nodes.Instance",
            "properties": {
                "image_id": image_id,
                "instance_type": "t2.micro",
                "agent_config": {"install_method": "none"},
            },
            "relationships": [
                {"type": "cloudify.aws.relationships.instance_connected_to_keypair", "target": "keypair"},
                {"type": "cloudify.aws.relationships.instance_connected_to_security_group", "target": "security_group"},
                {"type": "cloudify.aws.relationships.instance_connected_to_elastic_ip", "target": "elastic_ip"},
            ],
        },
    }


class SentCalls:
    """Every EC2 call the plugin's clients send: (operation, parameters)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def record(self, params, model, **_) -> None:
        self.sent.append((model.name, dict(params)))

    @property
    def dry_runs(self) -> list[str]:
        return [name for name, params in self.sent if params.get("DryRun")]

    @property
    def mutating(self) -> list[str]:
        """Calls that change something: mutating operations sent without DryRun."""
        return [
            name
            for name, params in self.sent
            if name.startswith(CallRecorder.MUTATING_PREFIXES) and not params.get("DryRun")
        ]


@pytest.fixture
def sent(monkeypatch):
    calls = SentCalls()
    hook_clients(monkeypatch, "provide-client-params.ec2", calls.record)
    return calls


@pytest.fixture
def refuse_dry_runs(monkeypatch, sent):
    """Every dry run answers UnauthorizedOperation, as for credentials without the permission."""

    def refuse(params, model, **_):
        if params.get("DryRun"):
            error = {
                "Error": {
                    "Code": "UnauthorizedOperation",
                    "Message": "You are not authorized to perform this operation.",
                }
            }
            raise ClientError(error, model.name)

    hook_clients(monkeypatch, "provide-client-params.ec2", refuse)
    return sent


def nothing_exists(ec2) -> bool:
    return (
        ec2.describe_key_pairs()["KeyPairs"] == []
        and [group["GroupName"] for group in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
        and ec2.describe_addresses()["Addresses"] == []
        and ec2.describe_instances()["Reservations"] == []
    )


# --- aws_preflight ---------------------------------------------------------------


def test_preflight_reports_a_wrong_image_and_a_bad_rule_in_one_error(deploy, tmp_path, sent):
    deployment = deploy(topology(tmp_path, image_id=WRONG_IMAGE, rules=[SSH, BAD_RULE]))
    with pytest.raises(NonRecoverableError) as raised:
        deployment.execute("aws_preflight")
    text = str(raised.value)
    assert text.startswith("aws_preflight found 2 problem(s); nothing was created:")
    assert "node 'vm' (instance vm_" in text and f"property 'image_id' names image '{WRONG_IMAGE}'" in text
    assert "node 'security_group' (instance security_group_" in text and "property 'rules[1].cidr_ip'" in text


def test_preflight_with_problems_creates_nothing(deploy, tmp_path, sent, ec2):
    deployment = deploy(topology(tmp_path, image_id=WRONG_IMAGE, rules=[SSH, BAD_RULE]))
    with pytest.raises(NonRecoverableError):
        deployment.execute("aws_preflight")
    assert sent.mutating == []
    assert nothing_exists(ec2)
    assert not (tmp_path / "keys").exists()


def test_preflight_with_good_inputs_passes_with_a_dry_run_of_every_create_and_no_mutating_call(
    deploy, tmp_path, sent, ec2
):
    deployment = deploy(topology(tmp_path))
    deployment.execute("aws_preflight")
    assert sorted(sent.dry_runs) == sorted(CREATES)
    assert sent.mutating == []
    assert nothing_exists(ec2)


def test_the_run_instances_dry_run_is_the_create_request_without_what_install_creates_first(deploy, tmp_path, sent):
    deployment = deploy(topology(tmp_path))
    deployment.execute("aws_preflight")
    (request,) = [params for name, params in sent.sent if name == "RunInstances"]
    assert request["ImageId"] == IMAGE_ID and request["InstanceType"] == "t2.micro"
    assert request["MetadataOptions"] == {"HttpTokens": "required"}
    assert "KeyName" not in request and "SecurityGroupIds" not in request and "ClientToken" not in request


def test_preflight_uses_a_connected_external_key_pair_in_the_dry_run(deploy, tmp_path, sent, ec2):
    ec2.create_key_pair(KeyName="existing")
    key_file = tmp_path / "existing.pem"
    key_file.write_text("private")
    key_file.chmod(0o600)
    nodes = topology(tmp_path)
    nodes["keypair"]["properties"].update(
        use_external_resource=True, resource_id="existing", private_key_path=str(key_file)
    )
    deploy(nodes).execute("aws_preflight")
    (request,) = [params for name, params in sent.sent if name == "RunInstances"]
    assert request["KeyName"] == "existing"


def test_preflight_uses_a_connected_external_group_given_by_id_in_the_dry_run(deploy, tmp_path, sent, ec2):
    group_id = ec2.create_security_group(GroupName="existing", Description="existing")["GroupId"]
    nodes = topology(tmp_path)
    nodes["security_group"]["properties"].update(use_external_resource=True, resource_id=group_id)
    deploy(nodes).execute("aws_preflight")
    (request,) = [params for name, params in sent.sent if name == "RunInstances"]
    assert request["SecurityGroupIds"] == [group_id]


def test_the_reference_documents_every_workflow_plugin_yaml_declares():
    workflows = yaml.safe_load(PLUGIN_YAML.read_text())["workflows"]
    reference = " ".join((ROOT / "docs" / "reference.md").read_text().split())
    assert workflows == {"aws_preflight": {"mapping": "aws.ec2.preflight.run"}}
    assert "## Preflight (`aws_preflight`)" in reference and "`run` function of `ec2/preflight.py`" in reference


def test_preflight_accepts_a_rule_naming_a_group_that_install_creates_first(deploy, tmp_path, sent):
    nodes = topology(tmp_path)
    nodes["admins"] = {"type": "cloudify.aws.nodes.SecurityGroup", "properties": {"resource_id": "admins"}}
    rule = {"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "src_group_id": "admins"}
    nodes["security_group"]["properties"]["rules"] = [rule, HTTP]
    nodes["security_group"]["relationships"] = [{"type": "cloudify.relationships.depends_on", "target": "admins"}]
    deploy(nodes).execute("aws_preflight")
    assert sent.mutating == []


def test_preflight_still_reports_a_rule_naming_a_group_nobody_creates(deploy, tmp_path, sent):
    nodes = topology(tmp_path)
    nodes["security_group"]["properties"]["rules"] = [
        {"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "src_group_id": "nobody"}
    ]
    with pytest.raises(NonRecoverableError) as raised:
        deploy(nodes).execute("aws_preflight")
    assert "property 'rules[0].src_group_id' names security group 'nobody'" in str(raised.value)


def test_the_classic_validation_hook_before_install_dry_runs_the_instance_without_its_targets(
    deploy, tmp_path, sent, ec2
):
    deployment = deploy(topology(tmp_path))
    deployment.execute_operation("cloudify.interfaces.validation.creation", ["keypair", "security_group", "vm"])
    (request,) = [params for name, params in sent.sent if name == "RunInstances"]
    assert "KeyName" not in request and "SecurityGroupIds" not in request
    assert sent.mutating == []
    assert nothing_exists(ec2)


# --- AWS refuses the dry run ---------------------------------------------------------


def test_preflight_reports_each_refused_dry_run_naming_aws_config_and_the_permission(
    deploy, tmp_path, refuse_dry_runs, ec2
):
    with pytest.raises(NonRecoverableError) as raised:
        deploy(topology(tmp_path)).execute("aws_preflight")
    text = str(raised.value)
    assert "4 problem(s)" in text
    for operation in CREATES:
        assert (
            f"property 'aws_config' gives credentials that may not call {operation}: AWS refuses a dry run of "
            f"{operation} (UnauthorizedOperation: You are not authorized to perform this operation.). "
            f"Fix: allow ec2:{operation} to these credentials"
        ) in text
    assert refuse_dry_runs.mutating == []
    assert nothing_exists(ec2)


def test_install_fails_on_a_refused_dry_run_before_anything_is_created(deploy, tmp_path, refuse_dry_runs, ec2, capsys):
    deployment = deploy(topology(tmp_path))
    with pytest.raises(WorkflowFailed):
        deployment.install()
    out = capsys.readouterr().out
    assert "creation_validation' -> node '" in out
    assert "property 'aws_config' gives credentials that may not call " in out
    assert refuse_dry_runs.mutating == []
    assert nothing_exists(ec2)


def test_install_dry_runs_each_create_in_validation_before_making_it(deploy, tmp_path, sent):
    deploy(topology(tmp_path)).install()
    order = [(name, bool(params.get("DryRun"))) for name, params in sent.sent]
    for operation in CREATES:
        assert order.index((operation, True)) < order.index((operation, False)), operation


@pytest.mark.parametrize(
    "code, prop",
    [
        ("InvalidAMIID.NotFound", "image_id"),
        ("InvalidSubnetID.NotFound", "parameters.subnet_id"),
        ("InvalidParameterValue", "parameters"),
        ("UnauthorizedOperation", "aws_config"),
    ],
)
def test_a_refused_run_instances_dry_run_names_the_property(deploy, tmp_path, monkeypatch, code, prop):
    def refuse(params, model, **_):
        if params.get("DryRun"):
            raise ClientError({"Error": {"Code": code, "Message": "refused"}}, model.name)

    hook_clients(monkeypatch, "provide-client-params.ec2.RunInstances", refuse)
    with pytest.raises(NonRecoverableError) as raised:
        deploy(topology(tmp_path)).execute("aws_preflight")
    assert "1 problem(s)" in str(raised.value)
    assert "node 'vm' (instance vm_" in str(raised.value)
    assert f"property '{prop}' " in str(raised.value) and f"RunInstances ({code}: refused)" in str(raised.value)


def test_a_used_up_quota_says_to_ask_for_more():
    refusal = ClientError({"Error": {"Code": "AddressLimitExceeded", "Message": "too many"}}, "AllocateAddress")
    with pytest.raises(PluginError, match="ask AWS for a higher quota"):
        errors.check_dry_run("AllocateAddress", refusal, "tags", "correct the tags")


def test_a_duplicate_name_in_a_dry_run_is_left_to_the_existence_check():
    refusal = ClientError({"Error": {"Code": "InvalidKeyPair.Duplicate", "Message": "exists"}}, "CreateKeyPair")
    assert errors.check_dry_run("CreateKeyPair", refusal, "resource_id", "rename it") is None


def test_an_endpoint_that_carries_out_a_dry_run_is_an_error():
    with pytest.raises(PluginError, match="carried out a call made with DryRun=True"):
        aws.dry_run(lambda **_: {"KeyName": "made"})


def test_throttling_of_a_dry_run_is_raised_to_be_retried():
    def throttled(**_):
        raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "RunInstances")

    with pytest.raises(ClientError):
        aws.dry_run(throttled)


def test_preflight_names_the_account_and_arn_it_checks_as(deploy, tmp_path, capsys):
    deploy(topology(tmp_path)).execute("aws_preflight")
    out = capsys.readouterr().out
    assert "act as arn:aws:sts::123456789012:user/moto (account 123456789012)." in out
