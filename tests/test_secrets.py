"""Redaction of secrets in log records and error messages (ec2/secrets.py)."""

import logging

from ec2 import connection, secrets


def test_a_proxy_password_is_redacted_from_messages_and_log_records(caplog):
    settings = connection.client_settings(
        {"proxy": "proxy.example", "proxy_port": 3128, "proxy_user": "me", "proxy_pass": "Pr0xyS3cret!"}
    )
    connection._create_client(settings)
    message = f"Failed to connect to proxy URL: {settings['proxies']['https']}"
    assert "Pr0xyS3cret" not in secrets.redact(message)
    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        logging.getLogger("urllib3.connectionpool").debug("proxy %s", settings["proxies"]["https"])
    assert "Pr0xyS3cret" not in caplog.text and "<redacted>" in caplog.text


def test_private_key_material_is_redacted_whatever_its_form():
    text = "b'<keyMaterial>-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----</keyMaterial>'"
    assert "MIIE" not in secrets.redact(text)
    assert "MIIE" not in secrets.redact('{"KeyMaterial": "MIIE..."}')


def test_a_signed_request_loses_its_access_key_and_session_token():
    text = "Authorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE1234/20261202 X-Amz-Security-Token: FwoGZXIvYXdz"
    cleaned = secrets.redact(text)
    assert "AKIAEXAMPLE1234" not in cleaned and "FwoGZXIvYXdz" not in cleaned
