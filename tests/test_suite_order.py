"""The order the suite runs in under pytest-xdist (tests/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tests import conftest


@dataclass
class Item:
    name: str
    waits: bool = False

    def get_closest_marker(self, name: str):
        return name == "waits" and self.waits or None


def ordered(items: list[Item], monkeypatch, workers: int) -> list[str]:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(workers))
    conftest.pytest_collection_modifyitems(None, items)
    return [item.name for item in items]


def test_the_tests_that_wait_start_first_in_half_of_the_workers(monkeypatch):
    items = [Item(f"t{n}") for n in range(12)] + [Item(f"w{n}", waits=True) for n in range(4)]
    # worksteal deals 4 contiguous shares of 4: w0 w2 head the first, w1 w3 the second.
    assert ordered(items, monkeypatch, 4) == [
        *("w0", "w2", "t0", "t1"),
        *("w1", "w3", "t2", "t3"),
        *("t4", "t5", "t6", "t7"),
        *("t8", "t9", "t10", "t11"),
    ]


def test_without_workers_the_order_stays_as_collected(monkeypatch):
    items = [Item("t0"), Item("w0", waits=True), Item("t1")]
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    conftest.pytest_collection_modifyitems(None, items)
    assert [item.name for item in items] == ["t0", "w0", "t1"]
