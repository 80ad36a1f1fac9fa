"""The one place that builds EC2 clients.

A node's ``aws_config`` property is translated into boto3 session and client
arguments. Keys left out fall back to boto3's standard chain: environment
variables (including ``AWS_ENDPOINT_URL``), shared config and credentials
files, ``AWS_PROFILE`` and the instance role. Old blueprints may still use the
boto 2 ``EC2Connection`` names; they are mapped onto their boto3 equivalents.
"""

from __future__ import annotations

import functools
import json
from typing import Any
from urllib.parse import quote

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ProfileNotFound
from cloudify.exceptions import NonRecoverableError

from ec2 import constants

BOTO3_KEYS = (
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "region_name",
    "endpoint_url",
    "profile_name",
    "verify",
)
RETRY_KEYS = ("retry_mode", "max_attempts")
TIMEOUT_KEYS = ("connect_timeout", "read_timeout")
BOTO2_KEYS = (
    "ec2_region_name",
    "ec2_region_endpoint",
    "security_token",
    "is_secure",
    "port",
    "validate_certs",
    "proxy",
    "proxy_port",
    "proxy_user",
    "proxy_pass",
)
# Classic names that are the same setting as a boto3 name.
BOTO2_ALIASES = {"ec2_region_name": "region_name", "security_token": "aws_session_token", "validate_certs": "verify"}
ACCEPTED_KEYS = BOTO3_KEYS + RETRY_KEYS + TIMEOUT_KEYS + BOTO2_KEYS
RETRY_MODES = ("legacy", "standard", "adaptive")
TRUE_WORDS = ("true", "yes", "1", "on")
FALSE_WORDS = ("false", "no", "0", "off")


def ec2_client(aws_config: dict | None, node_id: str = "") -> Any:
    """An EC2 client for a node's ``aws_config`` (boto3 or boto 2 keys)."""
    settings = client_settings(aws_config or {}, node_id)
    try:
        return _cached_client(json.dumps(settings, sort_keys=True))
    except ProfileNotFound as error:
        where = f"node '{node_id}': " if node_id else ""
        raise NonRecoverableError(
            f"{where}{error}. Fix: correct aws_config 'profile_name' (or AWS_PROFILE), "
            "or add that profile to the shared AWS config and credentials files."
        ) from None
    except (BotoCoreError, ValueError) as error:  # a bad region name, endpoint or retry setting
        where = f"node '{node_id}': " if node_id else ""
        raise NonRecoverableError(
            f"{where}property 'aws_config' does not make a usable EC2 client: {error}. "
            "Fix: correct region_name, endpoint_url (or the classic endpoint keys) and the retry settings."
        ) from None


@functools.cache
def ec2_service_model() -> Any:
    """The EC2 API description, from the loader every client shares."""
    session = botocore.session.Session()
    session.register_component("data_loader", _DATA_LOADER)
    return session.get_service_model("ec2")


def client_settings(aws_config: dict, node_id: str = "") -> dict:
    """Normalise ``aws_config`` into plain boto3 session and client settings."""
    where = f"node '{node_id}': " if node_id else ""
    if not isinstance(aws_config, dict):
        raise NonRecoverableError(
            f"{where}property 'aws_config' must be a dictionary, "
            f"not {type(aws_config).__name__}. Fix: give it keys such as region_name."
        )
    unknown = sorted(set(aws_config) - set(ACCEPTED_KEYS))
    if unknown:
        raise NonRecoverableError(
            f"{where}property 'aws_config' has unknown key(s) {unknown}. "
            f"Fix: use only the accepted keys: {', '.join(ACCEPTED_KEYS)}."
        )
    config = {key: value for key, value in aws_config.items() if value not in (None, "")}

    settings: dict[str, Any] = {key: config[key] for key in BOTO3_KEYS if key in config}
    if "validate_certs" in config:
        config["validate_certs"] = _as_bool(config["validate_certs"], "validate_certs", where)
    if "verify" in settings and _is_boolean_text(settings["verify"]):
        settings["verify"] = _as_bool(settings["verify"], "verify", where)
    for boto2_key, boto3_key in BOTO2_ALIASES.items():
        if boto2_key not in config:
            continue
        if boto3_key in settings and settings[boto3_key] != config[boto2_key]:
            raise NonRecoverableError(
                f"{where}aws_config sets both '{boto3_key}' and its classic name '{boto2_key}', differently. "
                f"Fix: keep only '{boto3_key}'."
            )
        settings[boto3_key] = config[boto2_key]
    for key in ("proxy_port", "proxy_user", "proxy_pass"):
        if key in config and "proxy" not in config:
            raise NonRecoverableError(f"{where}aws_config sets '{key}' without 'proxy'. Fix: add the proxy host.")

    is_secure = _as_bool(config.get("is_secure", True), "is_secure", where)
    if "endpoint_url" not in settings and ("ec2_region_endpoint" in config or "port" in config):
        host = str(config.get("ec2_region_endpoint") or "").rstrip("/") or (
            f"ec2.{settings.get('region_name', constants.DEFAULT_REGION)}.amazonaws.com"
        )
        if "://" not in host:
            host = f"{'https' if is_secure else 'http'}://{host}"
        port = f":{_as_int(config['port'], 'port', where)}" if "port" in config else ""
        settings["endpoint_url"] = f"{host}{port}"
    if not is_secure:
        settings["use_ssl"] = False

    settings["retry_mode"] = config.get("retry_mode", constants.DEFAULT_RETRY_MODE)
    if settings["retry_mode"] not in RETRY_MODES:
        raise NonRecoverableError(
            f"{where}aws_config 'retry_mode' is {settings['retry_mode']!r}. Fix: use one of {', '.join(RETRY_MODES)}."
        )
    settings["max_attempts"] = _as_int(
        config.get("max_attempts", constants.DEFAULT_MAX_ATTEMPTS), "max_attempts", where
    )
    for key in TIMEOUT_KEYS:
        if key in config:
            settings[key] = _as_int(config[key], key, where)
    if "proxy" in config:
        settings["proxies"] = _proxies(config, where)
    return settings


def _proxies(config: dict, where: str) -> dict:
    proxy = str(config["proxy"])
    if "://" not in proxy:
        proxy = f"http://{proxy}"
    scheme, host = proxy.split("://", 1)
    credentials = ""
    if config.get("proxy_user"):
        credentials = quote(str(config["proxy_user"]), safe="")
        if config.get("proxy_pass"):
            credentials += ":" + quote(str(config["proxy_pass"]), safe="")
        credentials += "@"
    port = f":{_as_int(config['proxy_port'], 'proxy_port', where)}" if "proxy_port" in config else ""
    url = f"{scheme}://{credentials}{host}{port}"
    return {"http": url, "https": url}


@functools.lru_cache(maxsize=32)
def _cached_client(settings_json: str) -> Any:
    return _create_client(json.loads(settings_json))


# One loader for every session: the EC2 service model is read from disk once.
_DATA_LOADER = botocore.loaders.create_loader()


def _create_client(settings: dict) -> Any:
    core_session = botocore.session.Session()
    core_session.register_component("data_loader", _DATA_LOADER)
    session = boto3.session.Session(
        botocore_session=core_session,
        aws_access_key_id=settings.get("aws_access_key_id"),
        aws_secret_access_key=settings.get("aws_secret_access_key"),
        aws_session_token=settings.get("aws_session_token"),
        region_name=settings.get("region_name"),
        profile_name=settings.get("profile_name"),
    )
    config = Config(
        retries={"mode": settings["retry_mode"], "total_max_attempts": settings["max_attempts"]},
        proxies=settings.get("proxies"),
        connect_timeout=settings.get("connect_timeout", constants.DEFAULT_CONNECT_TIMEOUT),
        read_timeout=settings.get("read_timeout", constants.DEFAULT_READ_TIMEOUT),
    )
    return session.client(
        "ec2",
        region_name=session.region_name or constants.DEFAULT_REGION,
        endpoint_url=settings.get("endpoint_url"),
        verify=settings.get("verify"),
        use_ssl=settings.get("use_ssl", True),
        config=config,
    )


def _as_bool(value: Any, key: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise NonRecoverableError(f"{where}aws_config '{key}' must be true or false, not {value!r}.")


def _is_boolean_text(value: Any) -> bool:
    return isinstance(value, bool) or str(value).strip().lower() in TRUE_WORDS + FALSE_WORDS


def _as_int(value: Any, key: str, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise NonRecoverableError(f"{where}aws_config '{key}' must be a whole number, not {value!r}.") from None
