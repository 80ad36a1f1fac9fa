"""The DEBUG-logging secrets test of test_exactly_once, under an assumed role:
the role session's keys, which STS's answer carries and every EC2 request is
signed with, appear in no log record and no runtime property."""

from __future__ import annotations

from tests.support import reference_topology, sdk_debug_logs
from tests.test_assume_role import ROLE


def test_an_assumed_role_run_at_debug_leaves_no_session_key_in_logs_or_runtime_properties(
    moto_server, deploy, tmp_path, caplog, role_sessions
):
    aws_config = {"role_arn": ROLE, "endpoint_url": moto_server.url}
    with sdk_debug_logs(caplog):
        deployment = deploy(reference_topology(aws_config, tmp_path / "keys" / "key.pem"))
        deployment.install()
        runtime = {node: deployment.runtime(node) for node in ("keypair", "security_group", "vm", "elastic_ip")}
        deployment.uninstall()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "<AssumeRoleResponse" in logged  # STS's answer, as botocore logs it at DEBUG, was captured
    assert "X-Amz-Security-Token" in logged  # and so were the signed EC2 requests
    (session,) = role_sessions.sessions
    for key in ("AccessKeyId", "SecretAccessKey", "SessionToken"):
        assert session[key] not in logged, key
        assert session[key] not in repr(runtime), key
