"""The emulator's server (tools/moto_server.py): moto's own, with two per-request lookups remembered."""

from __future__ import annotations

import moto.backends
import moto.core.responses
from moto.ec2.responses import EC2Response

from tools import moto_server as server_script


def keep(monkeypatch) -> None:
    """Puts moto's two lookups back after the test, whatever it did to them."""
    monkeypatch.setattr(moto.backends, "list_of_moto_modules", moto.backends.list_of_moto_modules)
    monkeypatch.setattr(moto.core.responses, "method_names_from_class", moto.core.responses.method_names_from_class)


def test_the_remembered_lookups_answer_as_motos_own(monkeypatch):
    keep(monkeypatch)
    modules = list(moto.backends.list_of_moto_modules())
    methods = moto.core.responses.method_names_from_class(EC2Response)
    assert server_script.remember_lookups() is True
    assert list(moto.backends.list_of_moto_modules()) == modules == list(moto.backends.list_of_moto_modules())
    assert moto.core.responses.method_names_from_class(EC2Response) == methods
    assert "describe_instances" in methods and "ec2" in modules


def test_a_moto_without_those_lookups_is_served_as_it_is(monkeypatch):
    keep(monkeypatch)
    monkeypatch.delattr(moto.core.responses, "method_names_from_class")
    assert server_script.remember_lookups() is False
    assert not hasattr(moto.core.responses, "method_names_from_class")


def test_the_session_emulator_runs_the_projects_server(moto_server):
    with open(f"/proc/{moto_server.pid}/cmdline", "rb") as cmdline:
        arguments = cmdline.read().split(b"\0")
    assert arguments[1].endswith(b"tools/moto_server.py")
