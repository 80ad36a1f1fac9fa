"""The one place that builds EC2 clients. Ctx-free.

A node's ``aws_config`` property is translated into boto3 session and client
arguments. Keys left out fall back to boto3's standard chain: environment
variables (including ``AWS_ENDPOINT_URL``), shared config and credentials
files, ``AWS_PROFILE`` and the instance role. Old blueprints may still use the
boto 2 ``EC2Connection`` names; they are mapped onto their boto3 equivalents.
One client is built per distinct configuration per process, under a lock, so
the workflow engine's threads share it.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ProfileNotFound

from ec2 import constants, secrets
from ec2.errors import BadInput
from ec2.properties import as_bool, as_int, is_boolean_text

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
# Settings of the plugin itself, not of the client.
PLUGIN_KEYS = ("propagation_timeout",)
ACCEPTED_KEYS = BOTO3_KEYS + RETRY_KEYS + TIMEOUT_KEYS + BOTO2_KEYS + PLUGIN_KEYS
RETRY_MODES = ("legacy", "standard", "adaptive")
CACHE_SIZE = 32

_clients: OrderedDict[str, Any] = OrderedDict()
_clients_lock = threading.Lock()
# One loader for every session: the EC2 service model is read from disk once,
# when the plugin is imported, so that no operation pays for it.
_DATA_LOADER = botocore.loaders.create_loader()
for _model in ("service-2", "paginators-1"):
    _DATA_LOADER.load_service_model("ec2", _model)
for _data in ("endpoints", "partitions", "_retry", "sdk-default-configuration"):
    _DATA_LOADER.load_data(_data)


def ec2_client(aws_config: dict | None) -> Any:
    """The EC2 client for a node's ``aws_config`` (boto3 or boto 2 keys)."""
    key = json.dumps(client_settings(aws_config or {}), sort_keys=True)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _build(json.loads(key))
            while len(_clients) > CACHE_SIZE:
                _clients.popitem(last=False)
        return client


def clear_cache() -> None:
    with _clients_lock:
        _clients.clear()


def _build(settings: dict) -> Any:
    try:
        return _create_client(settings)
    except ProfileNotFound as error:
        raise BadInput(
            "aws_config",
            f"names a profile that does not exist ({error})",
            "correct 'profile_name' (or AWS_PROFILE), or add that profile to the shared AWS config and credentials "
            "files",
        ) from None
    except (BotoCoreError, ValueError) as error:  # a bad region name, endpoint or retry setting
        raise BadInput(
            "aws_config",
            f"does not make a usable EC2 client ({error})",
            "correct region_name, endpoint_url (or the classic endpoint keys) and the retry settings",
        ) from None


@functools.cache
def ec2_service_model() -> Any:
    """The EC2 API description, from the loader every client shares."""
    session = botocore.session.Session()
    session.register_component("data_loader", _DATA_LOADER)
    return session.get_service_model("ec2")


@functools.cache
def known_regions() -> frozenset[str]:
    """Every region botocore's partition data knows for EC2."""
    session = botocore.session.Session()
    session.register_component("data_loader", _DATA_LOADER)
    return frozenset(
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("ec2", partition_name=partition)
    )


def client_settings(aws_config: Any) -> dict:
    """Normalises ``aws_config`` into plain boto3 session and client settings."""
    if not isinstance(aws_config, dict):
        raise BadInput(
            "aws_config", f"is a {type(aws_config).__name__}", "give a dictionary with keys such as region_name"
        )
    unknown = sorted(set(aws_config) - set(ACCEPTED_KEYS))
    if unknown:
        raise BadInput(
            "aws_config", f"has unknown key(s) {unknown}", f"use only the accepted keys: {', '.join(ACCEPTED_KEYS)}"
        )
    config = {key: value for key, value in aws_config.items() if value not in (None, "")}

    settings: dict[str, Any] = {key: config[key] for key in BOTO3_KEYS if key in config}
    if "validate_certs" in config:
        config["validate_certs"] = as_bool(config["validate_certs"], "aws_config.validate_certs")
    if "verify" in settings and is_boolean_text(settings["verify"]):
        settings["verify"] = as_bool(settings["verify"], "aws_config.verify")
    for boto2_key, boto3_key in BOTO2_ALIASES.items():
        if boto2_key not in config:
            continue
        if boto3_key in settings and settings[boto3_key] != config[boto2_key]:
            raise BadInput(
                "aws_config",
                f"sets both '{boto3_key}' and its classic name '{boto2_key}', differently",
                f"keep only '{boto3_key}'",
            )
        settings[boto3_key] = config[boto2_key]
    for key in ("proxy_port", "proxy_user", "proxy_pass"):
        if key in config and "proxy" not in config:
            raise BadInput("aws_config", f"sets '{key}' without 'proxy'", "add the proxy host")

    is_secure = as_bool(config.get("is_secure", True), "aws_config.is_secure")
    if "endpoint_url" not in settings and ("ec2_region_endpoint" in config or "port" in config):
        host = str(config.get("ec2_region_endpoint") or "").rstrip("/") or (
            f"ec2.{settings.get('region_name', constants.DEFAULT_REGION)}.amazonaws.com"
        )
        if "://" not in host:
            host = f"{'https' if is_secure else 'http'}://{host}"
        port = f":{as_int(config['port'], 'aws_config.port')}" if "port" in config else ""
        settings["endpoint_url"] = f"{host}{port}"
    if not is_secure:
        settings["use_ssl"] = False
    _check_region(settings)

    settings["retry_mode"] = config.get("retry_mode", constants.DEFAULT_RETRY_MODE)
    if settings["retry_mode"] not in RETRY_MODES:
        raise BadInput(
            "aws_config", f"has retry_mode {settings['retry_mode']!r}", f"use one of {', '.join(RETRY_MODES)}"
        )
    settings["max_attempts"] = as_int(
        config.get("max_attempts", constants.DEFAULT_MAX_ATTEMPTS), "aws_config.max_attempts"
    )
    for key in TIMEOUT_KEYS:
        if key in config:
            settings[key] = as_int(config[key], f"aws_config.{key}")
    if "proxy" in config:
        settings["proxies"] = _proxies(config)
    return settings


def propagation_timeout(aws_config: dict) -> float:
    """Seconds after a create during which EC2's NotFound for the new resource
    means "not visible yet" (``aws_config.propagation_timeout``)."""
    value = aws_config.get("propagation_timeout")
    if value in (None, ""):
        return float(constants.DEFAULT_PROPAGATION_TIMEOUT)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not 0 <= seconds <= 3600:
        raise BadInput(
            "aws_config",
            f"has propagation_timeout {value!r}",
            f"give a number of seconds from 0 to 3600 (default {constants.DEFAULT_PROPAGATION_TIMEOUT})",
        )
    return seconds


def _check_region(settings: dict) -> None:
    """A region botocore does not know is refused unless an endpoint is given:
    on AWS its DNS name would not resolve, and every call would be retried."""
    region = settings.get("region_name")
    if not region or settings.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL"):
        return
    if region not in known_regions():
        raise BadInput(
            "aws_config",
            f"names region {region!r}, which botocore does not know",
            "correct region_name (such as us-east-1 or eu-west-1), or give endpoint_url for a private endpoint",
        )


def _proxies(config: dict) -> dict:
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
    port = f":{as_int(config['proxy_port'], 'aws_config.proxy_port')}" if "proxy_port" in config else ""
    url = f"{scheme}://{credentials}{host}{port}"
    return {"http": url, "https": url}


def _create_client(settings: dict) -> Any:
    secrets.install_log_filter(settings)
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
    client = session.client(
        "ec2",
        region_name=session.region_name or constants.DEFAULT_REGION,
        endpoint_url=settings.get("endpoint_url"),
        verify=settings.get("verify"),
        use_ssl=settings.get("use_ssl", True),
        config=config,
    )
    return client
