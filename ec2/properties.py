"""Parsers for node property values: the one boolean parser, numbers, lists,
tags and the waiting properties. Ctx-free; they raise ``errors.BadInput``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ec2 import constants
from ec2.errors import BadInput

TRUE_WORDS = ("true", "yes", "1", "on")
FALSE_WORDS = ("false", "no", "0", "off")


def is_boolean_text(value: Any) -> bool:
    return isinstance(value, bool) or str(value).strip().lower() in TRUE_WORDS + FALSE_WORDS


def as_bool(value: Any, prop: str) -> bool:
    """True/False from a boolean or a word such as "true", "no" or "1"."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise BadInput(prop, f"is {value!r}", "give true or false")


def as_int(value: Any, prop: str) -> int:
    if isinstance(value, bool):
        raise BadInput(prop, f"is {value!r}", "give a whole number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadInput(prop, f"is {value!r}", "give a whole number") from None


def as_text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def string_list(value: Any, prop: str) -> list[str]:
    """A list of non-empty strings; a lone string is refused, not split."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise BadInput(prop, f"is {value!r}", "give a list of names or ids, such as [sg-0123abcd]")
    return [item.strip() for item in value]


def parse_tags(value: Any, prop: str = "tags") -> dict[str, str]:
    tags = value or {}
    if not isinstance(tags, dict):
        raise BadInput(prop, f"is a {type(tags).__name__}", "give a dictionary of tag names to values")
    for key, item in tags.items():
        if not isinstance(key, str) or not key or key.lower().startswith("aws:"):
            raise BadInput(prop, f"has an invalid tag name {key!r}", "use non-empty names not starting with 'aws:'")
        if item is not None and not isinstance(item, (str, int, float, bool)):
            raise BadInput(prop, f"has a non-scalar value for tag {key!r}", "use plain text values")
    return {key: "" if item is None else str(item) for key, item in tags.items()}


@dataclass(frozen=True)
class WaitSettings:
    """How long an operation polls in-process, how often, and when the workflow retries it."""

    timeout: float = constants.DEFAULT_WAIT_TIMEOUT
    interval: float = constants.DEFAULT_WAIT_INTERVAL
    retry_after: int = constants.DEFAULT_RETRY_AFTER


def parse_wait(properties: Mapping[str, Any]) -> WaitSettings:
    values: dict[str, float] = {}
    for prop, default in (
        ("wait_timeout", constants.DEFAULT_WAIT_TIMEOUT),
        ("wait_interval", constants.DEFAULT_WAIT_INTERVAL),
        ("retry_after", constants.DEFAULT_RETRY_AFTER),
    ):
        value = properties.get(prop, default)
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = -1.0
        if isinstance(value, bool) or seconds < 0 or (prop == "retry_after" and seconds < 1):
            raise BadInput(prop, f"is {value!r}", f"give a number of seconds (default {default})")
        values[prop] = seconds
    return WaitSettings(values["wait_timeout"], values["wait_interval"], int(values["retry_after"]))
