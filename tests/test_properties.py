"""Reading the blueprint's properties (ec2/properties.py): words, numbers,
tags and the waiting properties, each refused naming the property."""

from __future__ import annotations

import pytest

from ec2 import errors, properties


def test_tags_must_be_a_dictionary():
    with pytest.raises(errors.BadInput, match="'tags'"):
        properties.parse_tags(["a"])


@pytest.mark.parametrize("prop, value", [("wait_timeout", "soon"), ("wait_interval", -1), ("retry_after", 0)])
def test_waiting_properties_that_are_not_seconds_are_refused_naming_the_property(prop, value):
    with pytest.raises(errors.BadInput) as error:
        properties.parse_wait({prop: value})
    assert f"property '{prop}'" in str(error.value) and "Fix:" in str(error.value)


@pytest.mark.parametrize("word, expected", [("true", True), ("Yes", True), ("0", False), ("off", False), (True, True)])
def test_one_boolean_parser_reads_words_and_booleans(word, expected):
    assert properties.as_bool(word, "use_external_resource") is expected


def test_a_word_that_is_not_a_boolean_is_refused_naming_the_property():
    with pytest.raises(errors.BadInput, match="'use_external_resource'"):
        properties.as_bool("maybe", "use_external_resource")


@pytest.mark.parametrize("value", [30, "30"])
def test_a_whole_number_is_read_from_a_number_or_its_text(value):
    assert properties.as_int(value, "wait_timeout") == 30


@pytest.mark.parametrize("value", ["many", True, None])
def test_anything_but_a_whole_number_is_refused_naming_the_property(value):
    with pytest.raises(errors.BadInput, match="'max_attempts'"):
        properties.as_int(value, "max_attempts")


def test_a_name_list_is_a_list_of_names_and_a_lone_string_is_refused_not_split():
    assert properties.string_list([" web ", "db"], "security_groups") == ["web", "db"]
    with pytest.raises(errors.BadInput, match="'security_groups'"):
        properties.string_list("web,db", "security_groups")
