"""IMDSv2 by default: a new instance requires session tokens for its metadata
service unless ``parameters`` set MetadataOptions.HttpTokens."""

from __future__ import annotations

from tests.support import instance_node


def launched(deploy, ec2, **parameters) -> dict:
    deployment = deploy({"server": instance_node(parameters=parameters)})
    deployment.install()
    (reservation,) = ec2.describe_instances(InstanceIds=[deployment.runtime("server")["aws_resource_id"]])[
        "Reservations"
    ]
    return reservation["Instances"][0]["MetadataOptions"]


def test_a_new_instance_requires_imdsv2_tokens(deploy, ec2):
    assert launched(deploy, ec2)["HttpTokens"] == "required"


def test_parameters_can_allow_imdsv1_again(deploy, ec2):
    assert launched(deploy, ec2, MetadataOptions={"HttpTokens": "optional"})["HttpTokens"] == "optional"


def test_other_metadata_options_keep_imdsv2_required(deploy, ec2):
    options = launched(deploy, ec2, MetadataOptions={"HttpPutResponseHopLimit": 2})
    assert options["HttpTokens"] == "required"
    assert options["HttpPutResponseHopLimit"] == 2
