"""Benchmarks: EC2 calls and wall time of the plugin on the moto emulator, beside the lower bounds.

    make bench                        (or: .venv/bin/python -m bench.run [--quick])

Figures only; nothing here asserts on them. Sections (``--only`` picks some):

- ``client``: a genuinely cold EC2 client (import and build in a fresh Python
  process), the plugin's factory beside plain boto3.
- ``reference``: the reference topology (KeyPair, SecurityGroup with 2 rules,
  Instance, ElasticIP) installed and uninstalled through the counting proxy:
  calls by Action beside the lower bound (install 10, uninstall 6), workflow
  retries, and the install's wall time against the time its calls spent in
  the proxy. The first cycle runs in a fresh process (clients built from
  nothing); the later ones show the warm figures.
- ``scale``: N instances sharing one key pair and one group, N = 1, 10, 50,
  100 (``--quick``: 1, 10): calls per instance, wall time, peak memory.
- ``latency``: the proxy keeps instances pending, stopping and shutting-down
  for T seconds; install and uninstall time minus T, for T = 5 and 20.
- ``throttle``: EC2's documented default request limits as token buckets;
  10 deployments of 10 instances each install and uninstall concurrently in
  separate processes: RequestLimitExceeded answers, workflow retries,
  failed deployments, and what is left in EC2 afterwards.
  Run once per retry mode of ``--retry-modes`` (default: standard and
  adaptive), each with ``pace_after_throttle`` off and on (ec2/pacing.py),
  with the throttled share of all requests (dry runs and throttled answers
  included), and the un-throttled reference topology in each setting.
- ``soak``: through the same token buckets, and an elastic-IP limit of 5
  enforced by the proxy: one deployment of N = 50 and 200 instances with 5
  elastic IPs (the whole limit, so the quota preflight counts them), and 20
  deployments of 10 instances in parallel processes (``--quick``: N = 50, and
  5 x 10): requests and calls per instance, throttled answers, wall time,
  failures and leftovers.
- ``manager``: manager mode (tools/manager.py), each operation in a new
  process of the plugin venv made from dist/*.wgn (`make wagon`), as a
  Cloudify manager runs it: the reference topology and 10 instances installed
  and uninstalled through the counting proxy, beside the same in memory:
  wall times, per-operation process time (spawn to exit) and calls by Action.

Writes build/bench/results.json and build/bench/bench.png.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import multiprocessing
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3

from bench import worker
from ec2 import constants
from ec2.connection import RETRY_MODES, client_settings
from tools import manager as manager_mode
from tools import topology
from tools.ec2proxy import Call, Ec2Proxy, ProxyConfig, is_mutating
from tools.emulator import MotoServer
from tools.local import IMAGE_ID, ROOT

SECTIONS = ("client", "reference", "scale", "latency", "throttle", "soak", "manager")
# The soak's account: EC2's default elastic-IP limit, enforced by the proxy.
SOAK_ELASTIC_IPS = 5
SOAK_TIMEOUT = 2400
# The plugin's own client settings (no retry_mode or pace_after_throttle in aws_config).
DEFAULT_CLIENT = {key: client_settings({})[key] for key in ("retry_mode", "pace_after_throttle")}
MANAGER_FLEET = 10
PLUGIN_SOURCES = ("setup.py", "plugin.yaml", "ec2/*.py")
REGION = "us-east-1"
STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {text}", flush=True)


def table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(
        "  "
        + "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    )
    print("  " + "  ".join("-" * w for w in widths))
    for row in cells:
        print(
            "  "
            + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    print(flush=True)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "-" if value is None else str(value)


class Bench:
    def __init__(self, emulator: MotoServer, args: argparse.Namespace, folder: Path) -> None:
        self.emulator = emulator
        self.args = args
        self.folder = folder
        self.direct = boto3.client("ec2", endpoint_url=emulator.url, region_name=REGION)

    # -- plumbing ----------------------------------------------------------

    def fresh_emulator(self) -> None:
        """Empties the emulator and loads its AMIs, so no section pays for the previous one or for start-up."""
        self.emulator.reset()
        self.direct.describe_images(ImageIds=[IMAGE_ID])

    def job(
        self,
        name: str,
        proxy: Ec2Proxy,
        topology_name: str,
        instances: int = 1,
        cycles: int = 1,
        client: dict | None = None,
        elastic_ips: int = 0,
    ) -> dict:
        """A deployment for a child process; ``client`` settings (retry_mode, pace_after_throttle) go
        into its aws_config (None: the plugin's defaults)."""
        aws_config: dict[str, Any] = {"endpoint_url": proxy.url, "region_name": REGION, **(client or {})}
        return {
            "name": name,
            "topology": topology_name,
            "instances": instances,
            "elastic_ips": elastic_ips,
            "cycles": cycles,
            "folder": str(self.folder / name),
            "aws_config": aws_config,
            "task_retries": self.args.task_retries,
            "task_retry_interval": self.args.task_retry_interval,
        }

    def run_jobs(self, jobs: list[dict], timeout: float) -> list[dict]:
        """Runs each job in its own fresh process, all at once; kills what is still running at the deadline."""
        context = multiprocessing.get_context("spawn")
        results_queue = context.Queue()
        processes = [context.Process(target=worker.child, args=(job, results_queue)) for job in jobs]
        for process in processes:
            process.start()
        results: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        while len(results) < len(jobs) and time.monotonic() < deadline:
            try:
                name, result = results_queue.get(timeout=min(5.0, max(0.1, deadline - time.monotonic())))
                results[name] = result
            except queue.Empty:
                if not any(process.is_alive() for process in processes) and results_queue.empty():
                    break
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        missing = {"phases": [], "error": f"no result within {timeout:.0f}s (timed out or crashed)"}
        return [results.get(job["name"], {"name": job["name"], **missing}) for job in jobs]

    def leftovers(self) -> dict[str, int]:
        """What EC2, asked directly, still holds beyond its defaults."""
        reservations = self.direct.describe_instances()["Reservations"]
        return {
            "instances": sum(i["State"]["Name"] != "terminated" for r in reservations for i in r["Instances"]),
            "key_pairs": len(self.direct.describe_key_pairs()["KeyPairs"]),
            "security_groups": sum(
                g["GroupName"] != "default" for g in self.direct.describe_security_groups()["SecurityGroups"]
            ),
            "addresses": len(self.direct.describe_addresses()["Addresses"]),
        }

    @staticmethod
    def phase_figures(proxy: Ec2Proxy, phase: dict) -> dict:
        """A phase's calls and time in the proxy, from the calls that arrived while it ran."""
        since, until = phase["started"], phase["ended"]
        counts = proxy.counts(since, until)
        return {
            **{k: phase[k] for k in ("cycle", "phase", "seconds", "ok", "error", "rescheduled", "failed_tasks")},
            "calls": sum(counts.values()),
            "mutating_calls": sum(n for action, n in counts.items() if is_mutating(action)),
            "by_action": dict(sorted(counts.items())),
            "aws_seconds": proxy.busy_seconds(since, until),
            "throttled": proxy.outcomes(since, until).get("throttled", 0),
            "run_instances_requests": sum(c.action == "RunInstances" for c in proxy.seen(since, until)),
        }

    # -- sections ----------------------------------------------------------

    def client(self) -> dict:
        say("cold client: import and build an EC2 client in fresh Python processes")
        aws_config = {"endpoint_url": self.emulator.url, "region_name": REGION}
        repeat = 2 if self.args.quick else 3
        results = {kind: worker.cold_client(aws_config, kind, repeat) for kind in ("plugin", "boto3")}
        rows = [
            [
                kind,
                None if r is None else r.get("import"),
                None if r is None else r.get("build"),
                None if r is None else r.get("total"),
            ]
            for kind, r in results.items()
        ]
        table(["fresh process (median s)", "import", "build client", "total"], rows)
        return results

    def reference(self) -> dict:
        cycles = 2 if self.args.quick else 3
        say(f"reference topology: {cycles} install/uninstall cycles in one fresh process, through the counting proxy")
        self.fresh_emulator()
        with Ec2Proxy(self.emulator.url) as proxy:
            (result,) = self.run_jobs([self.job("reference", proxy, "reference", cycles=cycles)], timeout=600)
            phases = [self.phase_figures(proxy, phase) for phase in result["phases"]]
        left = self.leftovers()
        if result.get("error"):
            say(f"  the job failed: {result['error']}")
        first = {p["phase"]: p for p in phases if p["cycle"] == 0}
        actions = sorted({a for p in first.values() for a in p["by_action"]})
        rows = [
            [a, *(first[w]["by_action"].get(a, 0) if w in first else None for w in ("install", "uninstall"))]
            for a in actions
        ]
        rows.append(["total", *(first[w]["calls"] if w in first else None for w in ("install", "uninstall"))])
        rows.append(
            ["lower bound", topology.REFERENCE_LOWER_BOUND["install"], topology.REFERENCE_LOWER_BOUND["uninstall"]]
        )
        rows.append(
            ["workflow retries", *(first[w]["rescheduled"] if w in first else None for w in ("install", "uninstall"))]
        )
        rows.append(
            ["failed tasks", *(first[w]["failed_tasks"] if w in first else None for w in ("install", "uninstall"))]
        )
        table(["EC2 calls, cycle 1", "install", "uninstall"], rows)
        table(
            ["cycle", "phase", "ok", "calls", "wall s", "AWS s (proxy)", "wall / AWS"],
            [
                [p["cycle"] + 1, p["phase"], p["ok"], p["calls"], p["seconds"], p["aws_seconds"], _ratio(p)]
                for p in phases
            ],
        )
        same = len({json.dumps(p["by_action"]) for p in phases if p["phase"] == "install"}) <= 1
        return {"phases": phases, "counts_same_every_cycle": same, "leftovers": left, "error": result.get("error")}

    def scale(self) -> dict:
        sizes = (1, 10) if self.args.quick else (1, 10, 50, 100)
        points = []
        for count in sizes:
            say(f"scale: {count} instance(s) sharing one key pair and one group, in a fresh process")
            self.fresh_emulator()
            with Ec2Proxy(self.emulator.url) as proxy:
                (result,) = self.run_jobs([self.job(f"scale-{count}", proxy, "fleet", instances=count)], timeout=900)
                phases = {p["phase"]: self.phase_figures(proxy, p) for p in result["phases"]}
            point: dict[str, Any] = {"instances": count, "phases": phases, "peak_rss_mib": result.get("peak_rss_mib")}
            point["leftovers"] = self.leftovers()
            point["error"] = result.get("error")
            points.append(point)
        base = points[0]["phases"] if points and points[0]["instances"] == 1 else {}
        rows = []
        for point in points:
            for workflow in ("install", "uninstall"):
                phase = point["phases"].get(workflow)
                if not phase:
                    rows.append([point["instances"], workflow, False, None, None, None, None, None, None])
                    continue
                count = point["instances"]
                phase["per_instance"] = phase["calls"] / count
                marginal = None
                if count > 1 and workflow in base:
                    marginal = (phase["calls"] - base[workflow]["calls"]) / (count - 1)
                phase["marginal_per_instance"] = marginal
                rows.append(
                    [
                        count,
                        workflow,
                        phase["ok"],
                        phase["calls"],
                        phase["per_instance"],
                        marginal,
                        phase["seconds"],
                        phase["rescheduled"],
                        point["peak_rss_mib"],
                    ]
                )
        table(
            ["N", "phase", "ok", "calls", "calls/N", "extra calls/instance", "wall s", "retries", "peak RSS MiB"],
            rows,
        )
        table(["N", "leftovers"], [[p["instances"], _leftover_text(p["leftovers"])] for p in points])
        return {"points": points, "lower_bound_per_instance": topology.PER_INSTANCE_LOWER_BOUND}

    def latency(self) -> dict:
        delays = (5,) if self.args.quick else (5, 20)
        runs: list[dict[str, Any]] = []
        for delay in delays:
            say(f"latency: instances stay pending / stopping / shutting-down for T = {delay} s")
            self.fresh_emulator()
            with Ec2Proxy(self.emulator.url, ProxyConfig(latency=delay)) as proxy:
                (result,) = self.run_jobs([self.job(f"latency-{delay}", proxy, "reference")], timeout=900)
                phases = {p["phase"]: self.phase_figures(proxy, p) for p in result["phases"]}
            runs.append({"T": delay, "phases": phases, "leftovers": self.leftovers(), "error": result.get("error")})
        rows = []
        for run in runs:
            for workflow in ("install", "uninstall"):
                phase = run["phases"].get(workflow)
                if phase:
                    phase["minus_T"] = phase["seconds"] - run["T"]
                    rows.append(
                        [
                            run["T"],
                            workflow,
                            phase["ok"],
                            phase["calls"],
                            phase["seconds"],
                            phase["minus_T"],
                            phase["rescheduled"],
                        ]
                    )
        table(["T s", "phase", "ok", "calls", "wall s", "wall - T", "retries"], rows)
        return {"runs": runs}

    def throttle(self) -> dict:
        """The 10 x 10 token-bucket run once per retry mode compared, unpaced and paced, and the
        un-throttled reference topology in each (what a setting costs when nothing throttles)."""
        deployments = 4 if self.args.quick else 10
        count = 10
        variants = [
            {"retry_mode": mode, "pace_after_throttle": paced}
            for paced in (False, True)
            for mode in self.args.retry_modes
        ]
        runs = [self.throttled_fleets(variant, deployments, count) for variant in variants]
        ordinary = [self.ordinary_path(variant) for variant in variants]
        table(
            ["throttling", *(run["client"] for run in runs)],
            [
                ["deployments x instances", *(f"{deployments} x {count}" for _ in runs)],
                ["wall s (all, install + uninstall)", *(run["wall_seconds"] for run in runs)],
                ["install wall s (slowest deployment)", *(run["install_seconds_max"] for run in runs)],
                ["requests (dry runs and throttled included)", *(run["requests"] for run in runs)],
                ["RequestLimitExceeded answers", *(run["request_limit_exceeded"] for run in runs)],
                ["throttled share of requests", *(_percent(run["throttled_share"]) for run in runs)],
                ["RunInstances requests (dry runs included)", *(run["run_instances_requests"] for run in runs)],
                ["workflow retries (rescheduled tasks)", *(run["workflow_retries"] for run in runs)],
                ["failed tasks (retried or not)", *(run["failed_tasks"] for run in runs)],
                ["failed deployments", *(len(run["failed_deployments"]) for run in runs)],
                ["leftovers in EC2", *(_leftover_text(run["leftovers"]) for run in runs)],
            ],
        )
        for run in runs:
            by_action = ", ".join(f"{a} {n}" for a, n in sorted(run["throttled_by_action"].items())) or "none"
            say(f"  {run['client']}: throttled by action: {by_action}")
            for error in run["errors"][:5]:
                say(f"  {run['client']} error: {error}")
        table(
            ["reference topology, no throttling", *(o["client"] for o in ordinary)],
            [
                ["install calls (cycle 1)", *(o["install_calls"] for o in ordinary)],
                ["uninstall calls (cycle 1)", *(o["uninstall_calls"] for o in ordinary)],
                ["install wall s (median of cycles)", *(o["install_seconds"] for o in ordinary)],
                ["uninstall wall s (median of cycles)", *(o["uninstall_seconds"] for o in ordinary)],
                ["all cycles ok", *(o["ok"] for o in ordinary)],
            ],
        )
        return {
            "deployments": deployments,
            "instances_each": count,
            "default_retry_mode": constants.DEFAULT_RETRY_MODE,
            "default_client": _client_label(DEFAULT_CLIENT),
            "runs": runs,
            "ordinary_path": ordinary,
        }

    def throttled_fleets(self, client: dict, deployments: int, count: int) -> dict:
        """``deployments`` fleets of ``count`` instances at once, each in its own process, through EC2's default
        token buckets, with the plugin's clients set up as ``client`` says."""
        label = _client_label(client)
        say(
            f"throttling: {deployments} deployments x {count} instances, concurrently in separate processes, "
            f"against EC2's default token buckets; {label}"
        )
        self.fresh_emulator()
        with Ec2Proxy(self.emulator.url, ProxyConfig(token_bucket=True)) as proxy:
            jobs = [
                self.job(f"throttle-{_slug(label)}-{i}", proxy, "fleet", instances=count, client=client)
                for i in range(deployments)
            ]
            started = time.monotonic()
            results = self.run_jobs(jobs, timeout=900)
            wall = time.monotonic() - started
            seen = proxy.seen()
            throttled_by_action = dict(proxy.throttled)
        figures = fleet_figures(results, seen)
        return {
            "client": label,
            **client,
            "wall_seconds": wall,
            **figures,
            "run_instances_requests": sum(c.action == "RunInstances" for c in seen),
            "throttled_by_action": throttled_by_action,
            "leftovers": self.leftovers(),
        }

    def ordinary_path(self, client: dict) -> dict:
        """The reference topology through the plain counting proxy (nothing throttles), clients set up as ``client``."""
        cycles = 2 if self.args.quick else 3
        label = _client_label(client)
        say(f"ordinary path: the reference topology, {cycles} cycles, no throttling; {label}")
        self.fresh_emulator()
        with Ec2Proxy(self.emulator.url) as proxy:
            job = self.job(f"ordinary-{_slug(label)}", proxy, "reference", cycles=cycles, client=client)
            (result,) = self.run_jobs([job], timeout=600)
            phases = [self.phase_figures(proxy, phase) for phase in result["phases"]]
        first = {p["phase"]: p for p in phases if p["cycle"] == 0}
        seconds = {w: [p["seconds"] for p in phases if p["phase"] == w] for w in ("install", "uninstall")}
        return {
            "client": label,
            **client,
            "cycles": cycles,
            "ok": bool(phases) and all(p["ok"] for p in phases) and not result.get("error"),
            "install_calls": first.get("install", {}).get("calls"),
            "uninstall_calls": first.get("uninstall", {}).get("calls"),
            "install_seconds": statistics.median(seconds["install"]) if seconds["install"] else None,
            "uninstall_seconds": statistics.median(seconds["uninstall"]) if seconds["uninstall"] else None,
            "phases": phases,
            "leftovers": self.leftovers(),
        }

    def soak(self) -> dict:
        """Long runs through EC2's default token buckets and an elastic-IP limit of 5: one deployment
        of N instances, and deployments of 10 instances each in parallel processes."""
        single = (50,) if self.args.quick else (50, 200)
        parallel = 5 if self.args.quick else 20
        count = 10
        runs = [self.soak_run(f"soak-single-{n}", [n], SOAK_ELASTIC_IPS) for n in single]
        runs.append(self.soak_run(f"soak-parallel-{parallel}x{count}", [count] * parallel))
        rows = []
        for run in runs:
            for workflow in ("install", "uninstall"):
                phase = run["phases"][workflow]
                rows.append(
                    [
                        run["label"],
                        workflow,
                        phase["requests"],
                        phase["requests_per_instance"],
                        phase["calls_per_instance"],
                        phase["throttled"],
                        _percent(phase["throttled_share"]),
                        phase["seconds"],
                    ]
                )
        table(
            ["soak run", "phase", "requests", "requests/N", "calls/N", "throttled", "share", "wall s"],
            rows,
        )
        table(
            ["soak run", "failed deployments", "failed tasks", "workflow retries", "leftovers"],
            [
                [
                    run["label"],
                    len(run["failed_deployments"]),
                    run["failed_tasks"],
                    run["workflow_retries"],
                    _leftover_text(run["leftovers"]),
                ]
                for run in runs
            ],
        )
        for run in runs:
            for error in run["errors"][:5]:
                say(f"  {run['label']} error: {error}")
        return {"elastic_ip_limit": SOAK_ELASTIC_IPS, "client": _client_label(DEFAULT_CLIENT), "runs": runs}

    def soak_run(self, name: str, fleets: list[int], elastic_ips: int = 0) -> dict:
        """One fleet deployment per entry of ``fleets`` (its instance count; each with ``elastic_ips``
        addresses), all at once, each in its own process, through the token buckets; figures per phase
        (install, uninstall) over all deployments."""
        instances = sum(fleets)
        label = f"{len(fleets)} x {fleets[0]}" if len(fleets) > 1 else f"1 x {instances}"
        label += f", {elastic_ips} elastic IPs each" if elastic_ips else ""
        say(f"soak: {label} instances through EC2's default token buckets, elastic-IP limit {SOAK_ELASTIC_IPS}")
        self.fresh_emulator()
        config = ProxyConfig(token_bucket=True, elastic_ip_limit=SOAK_ELASTIC_IPS)
        with Ec2Proxy(self.emulator.url, config) as proxy:
            jobs = [
                self.job(f"{name}-{i}", proxy, "fleet", instances=n, elastic_ips=elastic_ips)
                for i, n in enumerate(fleets)
            ]
            started = time.monotonic()
            results = self.run_jobs(jobs, timeout=SOAK_TIMEOUT)
            wall = time.monotonic() - started
            seen = proxy.seen()
        figures = fleet_figures(results, seen)
        phases = {}
        for workflow in ("install", "uninstall"):
            spans = [p for r in results for p in r["phases"] if p["phase"] == workflow]
            since = min((p["started"] for p in spans), default=0.0)
            until = max((p["ended"] for p in spans), default=0.0)
            window = [c for c in seen if since <= c.started <= until]
            throttled = sum(c.outcome == "throttled" for c in window)
            phases[workflow] = {
                "seconds": until - since if spans else None,
                "requests": len(window),
                "calls": sum(not c.dry_run for c in window),
                "requests_per_instance": len(window) / instances,
                "calls_per_instance": sum(not c.dry_run for c in window) / instances,
                "run_instances_per_instance": sum(c.action == "RunInstances" for c in window) / instances,
                "throttled": throttled,
                "throttled_share": throttled / len(window) if window else None,
                "throttled_by_action": dict(Counter(c.action for c in window if c.outcome == "throttled")),
            }
        return {
            "label": label,
            "deployments": len(fleets),
            "instances": instances,
            "elastic_ips_each": elastic_ips,
            "wall_seconds": wall,
            "phases": phases,
            **figures,
            "leftovers": self.leftovers(),
        }

    def manager(self) -> dict:
        say(
            f"manager mode: the reference topology and {MANAGER_FLEET} instances, each operation in a new process "
            "of the plugin venv made from the wagon, beside the same in memory"
        )
        try:
            wagon = manager_mode.wagon_in()
        except manager_mode.WagonNotFound as error:
            say(f"  skipped: {error}")
            return {"error": str(error)}
        newer = _sources_newer_than(wagon)
        if newer:
            say(f"  warning: {', '.join(newer[:3])} changed after {wagon.name} was built: run `make wagon`")
        plugin = manager_mode.plugin_venv(wagon)
        runs: list[dict[str, Any]] = []
        for topology_name, instances in (("reference", 1), ("fleet", MANAGER_FLEET)):
            for mode in ("local", "manager"):
                self.fresh_emulator()
                with Ec2Proxy(self.emulator.url) as proxy:
                    job = self.job(f"manager-{mode}-{topology_name}", proxy, topology_name, instances=instances)
                    job.update(mode=mode, plugin_venv=str(plugin.path), wagon=str(wagon))
                    (result,) = self.run_jobs([job], timeout=900)
                    phases = {
                        p["phase"]: {**self.phase_figures(proxy, p), **_process_figures(p["processes"])}
                        for p in result["phases"]
                    }
                run = {"topology": topology_name, "instances": instances, "mode": mode, "phases": phases}
                run.update(leftovers=self.leftovers(), error=result.get("error"))
                if run["error"]:
                    say(f"  {mode} {topology_name}: the job failed: {run['error']}")
                runs.append(run)
        found = {(r["topology"], r["mode"]): r["phases"] for r in runs}
        rows = []
        for topology_name, instances in (("reference", 1), ("fleet", MANAGER_FLEET)):
            local, managed = found.get((topology_name, "local"), {}), found.get((topology_name, "manager"), {})
            for workflow in ("install", "uninstall"):
                here, there = local.get(workflow, {}), managed.get(workflow, {})
                seconds = there.get("process_seconds") or {}
                rows.append(
                    [
                        f"{topology_name} (N={instances}) {workflow}",
                        here.get("ok"),
                        there.get("ok"),
                        here.get("seconds"),
                        there.get("seconds"),
                        _ratio_of(there.get("seconds"), here.get("seconds")),
                        there.get("processes"),
                        seconds.get("mean"),
                        seconds.get("median"),
                        seconds.get("max"),
                        there.get("rescheduled"),
                    ]
                )
        table(
            [
                "workflow",
                "ok (memory)",
                "ok (manager)",
                "wall s (memory)",
                "wall s (manager)",
                "manager / memory",
                "processes",
                "process s mean",
                "median",
                "max",
                "retries",
            ],
            rows,
        )
        for topology_name, instances in (("reference", 1), ("fleet", MANAGER_FLEET)):
            columns = [
                (workflow, mode, found.get((topology_name, mode), {}).get(workflow, {}).get("by_action", {}))
                for workflow in ("install", "uninstall")
                for mode in ("local", "manager")
            ]
            actions = sorted({action for *_, counts in columns for action in counts})
            action_rows: list[list[Any]] = [[a, *(counts.get(a, 0) for *_, counts in columns)] for a in actions]
            action_rows.append(["total", *(sum(counts.values()) for *_, counts in columns)])
            table(
                [
                    f"{topology_name} (N={instances}) calls",
                    *(f"{w} ({'memory' if m == 'local' else m})" for w, m, _ in columns),
                ],
                action_rows,
            )
        for run in runs:
            install: dict = run["phases"].get("install", {})  # type: ignore[attr-defined]
            if "run_instances_requests" in install:
                per_instance = install["run_instances_requests"] / run["instances"]
                say(
                    f"  {run['mode']} {run['topology']}: RunInstances requests per instance, dry runs included: "
                    f"{per_instance:.2f}"
                )
        table(
            ["manager mode run", "leftovers"],
            [[f"{r['mode']} {r['topology']}", _leftover_text(r["leftovers"])] for r in runs],
        )
        return {"wagon": wagon.name, "plugin_venv": str(plugin.path), "stale_sources": newer, "runs": runs}


def fleet_figures(results: list[dict], seen: list[Call]) -> dict:
    """Outcome and cost of deployments run at once: every request the proxy saw
    (dry runs and throttled answers included), the throttled share of them,
    failures, retries, and each deployment's phases."""
    failed = [r["name"] for r in results if r.get("error") or not r["phases"] or not all(p["ok"] for p in r["phases"])]
    errors = sorted(
        {r.get("error") or p["error"] for r in results for p in r["phases"] or [{}] if r.get("error") or p.get("error")}
    )
    throttled = sum(c.outcome == "throttled" for c in seen)
    seconds = {
        workflow: [p["seconds"] for r in results for p in r["phases"] if p["phase"] == workflow]
        for workflow in ("install", "uninstall")
    }
    return {
        "requests": len(seen),
        "calls": sum(not c.dry_run for c in seen),
        "dry_runs": sum(c.dry_run for c in seen),
        "request_limit_exceeded": throttled,
        "throttled_share": throttled / len(seen) if seen else None,
        "workflow_retries": sum(p["rescheduled"] for r in results for p in r["phases"]),
        "failed_tasks": sum(p["failed_tasks"] for r in results for p in r["phases"]),
        "failed_deployments": failed,
        "errors": errors[:20],
        "install_seconds_max": max(seconds["install"], default=None),
        "uninstall_seconds_max": max(seconds["uninstall"], default=None),
        "per_deployment": [
            {
                "name": r["name"],
                "peak_rss_mib": r.get("peak_rss_mib"),
                "phases": [{k: p[k] for k in ("phase", "seconds", "ok", "rescheduled")} for p in r["phases"]],
            }
            for r in results
        ],
    }


def _client_label(client: dict) -> str:
    client = {**DEFAULT_CLIENT, **client}
    return f"{client['retry_mode']}, {'paced' if client['pace_after_throttle'] else 'unpaced'}"


def _slug(label: str) -> str:
    return "-".join(label.replace(",", " ").split())


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _ratio(phase: dict) -> float | None:
    return phase["seconds"] / phase["aws_seconds"] if phase["aws_seconds"] else None


def _ratio_of(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def _process_figures(processes: list[dict]) -> dict:
    """How many operation processes a phase ran, and their spawn-to-exit seconds."""
    if not processes:
        return {}
    seconds = [p["seconds"] for p in processes]
    outcomes: dict[str, int] = {}
    for process in processes:
        outcomes[process["outcome"]] = outcomes.get(process["outcome"], 0) + 1
    return {
        "processes": len(processes),
        "process_seconds": {
            "mean": statistics.mean(seconds),
            "median": statistics.median(seconds),
            "max": max(seconds),
            "sum": sum(seconds),
        },
        "process_outcomes": outcomes,
        "slowest_process": max(processes, key=lambda p: p["seconds"])["operation"],
    }


def _sources_newer_than(wagon: Path) -> list[str]:
    """The plugin's sources changed after ``wagon`` was built (so it does not hold them)."""
    built = wagon.stat().st_mtime
    return sorted(
        str(path.relative_to(ROOT))
        for pattern in PLUGIN_SOURCES
        for path in ROOT.glob(pattern)
        if path.stat().st_mtime > built
    )


def _leftover_text(left: dict) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in left.items() if n) or "none"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("cloudify-aws-ec2-plugin", "boto3", "botocore", "moto", "cloudify-common", "matplotlib"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": commit or None,
    }


def method(args: argparse.Namespace) -> dict:
    return {
        "emulator": "moto server (tools/emulator.py) in its own process on 127.0.0.1, AMI validation on; "
        "emptied and warmed (one DescribeImages) before each section",
        "proxy": "tools/ec2proxy.py in the bench process: counts every call by Action and measures the time "
        "calls spend in it (overlapping calls counted once); latency and token-bucket modes where stated",
        "engine": "cloudify.workflows.local with InMemoryStorage, each deployment in a fresh spawned process",
        "manager": "manager section: the same engine with a FileStorage, each operation in a new process "
        "(tools/manager_dispatch.py) of the plugin venv that cloudify.plugin_installer and wagon.install made "
        "from dist/*.wgn; process time is from spawn to exit, seen by the deployment's process",
        "task_retries": args.task_retries,
        "task_retry_interval_s": args.task_retry_interval,
        "aws_config": "endpoint_url and region_name only (credentials from the environment); the plugin's "
        "defaults otherwise",
        "clock": "time.monotonic(); wall time of a workflow is env.execute's duration in the child",
        "quick": args.quick,
    }


def plot(results: dict, path: Path) -> bool:
    """Against N: calls per instance and wall time beside the lower bound (scale), and, through
    EC2's default token buckets, requests per instance, throttled answers and wall time (throttle, soak)."""
    points = results.get("sections", {}).get("scale", {}).get("points", [])
    points = [p for p in points if p["phases"]]
    series = token_bucket_series(results.get("sections", {}))
    if not points and not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = bool(points) + bool(series)
    figure, axes = plt.subplots(rows, 3, figsize=(15, 4.5 * rows), squeeze=False)
    row = 0
    if points:
        plot_scale(points, axes[row])
        row += 1
    if series:
        plot_token_bucket(series, axes[row])
    info = results["machine"]
    figure.suptitle(
        f"cloudify-aws-ec2-plugin {info['versions'].get('cloudify-aws-ec2-plugin')}"
        f" on moto {info['versions'].get('moto')}"
        f" - {info['cpu']}, {info['cores']} cores, Python {info['python']}",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_scale(points: list[dict], axes: Any) -> None:
    total_axis, calls_axis, time_axis = axes
    sizes = [p["instances"] for p in points]
    for workflow, marker in (("install", "o"), ("uninstall", "s")):
        phases = [p["phases"].get(workflow, {}) for p in points]
        total_axis.plot(sizes, [p.get("calls") for p in phases], marker=marker, label=workflow)
        calls_axis.plot(sizes, [p.get("per_instance") for p in phases], marker=marker, label=f"{workflow}: calls / N")
        time_axis.plot(sizes, [p.get("seconds") for p in phases], marker=marker, label=workflow)
    bound = topology.PER_INSTANCE_LOWER_BOUND["install"]
    total_axis.plot(sizes, [bound * n for n in sizes], color="grey", linestyle="--", label=f"lower bound {bound} N")
    calls_axis.axhline(bound, color="grey", linestyle="--", label=f"lower bound ({bound} per instance)")
    total_axis.set(xscale="log", yscale="log", xlabel="instances N", ylabel="EC2 calls", title="Calls")
    calls_axis.set(xscale="log", xlabel="instances N", ylabel="EC2 calls per instance", title="Calls per instance")
    time_axis.set(xscale="log", xlabel="instances N", ylabel="seconds", title="Wall time")
    for axis in axes:
        axis.set_xticks(sizes, [str(n) for n in sizes])
        axis.grid(True, alpha=0.3)
        axis.legend()


def token_bucket_series(sections: dict) -> dict[str, list[dict]]:
    """The runs through EC2's default token buckets, by series (one deployment; deployments
    of 10 in parallel, per retry mode), each point with its N and its install + uninstall totals."""
    series: dict[str, list[dict]] = {}
    throttle = sections.get("throttle", {})
    for run in throttle.get("runs", []):
        instances = throttle["deployments"] * throttle["instances_each"]
        series.setdefault(f"parallel deployments of 10, {run['client']}", []).append({"instances": instances, **run})
    soak = sections.get("soak", {})
    for run in soak.get("runs", []):
        kind = "one deployment" if run["deployments"] == 1 else "parallel deployments of 10"
        series.setdefault(f"{kind}, {soak['client']}", []).append(run)
    return {label: sorted(runs, key=lambda r: r["instances"]) for label, runs in series.items()}


def plot_token_bucket(series: dict[str, list[dict]], axes: Any) -> None:
    requests_axis, throttled_axis, time_axis = axes
    sizes = sorted({run["instances"] for runs in series.values() for run in runs})
    for (label, runs), marker in zip(sorted(series.items()), "o^sDv<>", strict=False):
        n = [run["instances"] for run in runs]
        requests_axis.plot(n, [run["requests"] / run["instances"] for run in runs], marker=marker, label=label)
        throttled_axis.plot(n, [run["request_limit_exceeded"] for run in runs], marker=marker, label=label)
        time_axis.plot(n, [run["wall_seconds"] for run in runs], marker=marker, label=label)
    requests_axis.set(
        xlabel="instances N (all deployments)",
        ylabel="requests per instance",
        title="Requests / N, install + uninstall, token buckets",
    )
    throttled_axis.set(xlabel="instances N (all deployments)", ylabel="answers", title="RequestLimitExceeded")
    time_axis.set(xlabel="instances N (all deployments)", ylabel="seconds", title="Wall time, install + uninstall")
    for axis in axes:
        axis.set_xticks(sizes, [str(n) for n in sizes])
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)


def summary(results: dict) -> None:
    """The figures the performance issue sets targets for, beside those targets."""
    sections = results["sections"]
    rows: list[list[Any]] = []
    reference = sections.get("reference", {})
    first = {p["phase"]: p for p in reference.get("phases", []) if p["cycle"] == 0}
    for workflow in ("install", "uninstall"):
        if workflow in first:
            rows.append(
                [f"reference {workflow} calls", first[workflow]["calls"], topology.REFERENCE_LOWER_BOUND[workflow]]
            )
    if "install" in first:
        rows.append(["reference install wall / AWS time (fresh process)", _ratio(first["install"]), "<= 2"])
    warm = [_ratio(p) for p in reference.get("phases", []) if p["phase"] == "install" and p["cycle"] > 0]
    ratios = [ratio for ratio in warm if ratio is not None]
    if ratios and len(ratios) == len(warm):
        rows.append(["reference install wall / AWS time (warm, median)", statistics.median(ratios), "<= 2"])
    points = sections.get("scale", {}).get("points", [])
    if points:
        largest = points[-1]
        for workflow in ("install", "uninstall"):
            phase = largest["phases"].get(workflow)
            if phase:
                rows.append(
                    [f"calls per instance, {workflow}, N = {largest['instances']}", phase["per_instance"], "<= 2"]
                )
        install = largest["phases"].get("install")
        if install and "run_instances_requests" in install:
            rows.append(
                [
                    f"RunInstances requests (dry runs included) per instance, install, N = {largest['instances']}",
                    install["run_instances_requests"] / largest["instances"],
                    "<= 1.1",
                ]
            )
    for run in sections.get("latency", {}).get("runs", []):
        for workflow in ("install", "uninstall"):
            phase = run["phases"].get(workflow)
            if phase:
                rows.append([f"latency T = {run['T']} s: {workflow} wall - T", phase["minus_T"], "<= 1"])
    throttle = sections.get("throttle")
    for run in throttle.get("runs", []) if throttle else []:
        label = f"throttling {throttle['deployments']} x {throttle['instances_each']}, {run['client']}"
        rows.append([f"{label}: throttled share", _percent(run["throttled_share"]), "<= 5%"])
        rows.append([f"{label}: failed deployments", len(run["failed_deployments"]), 0])
        rows.append([f"{label}: leftovers", _leftover_text(run["leftovers"]), "none"])
    for run in sections.get("soak", {}).get("runs", []):
        label = f"soak {run['label']}"
        for workflow in ("install", "uninstall"):
            phase = run["phases"][workflow]
            rows.append([f"{label}: {workflow} requests / N", phase["requests_per_instance"], None])
            rows.append([f"{label}: {workflow} throttled", phase["throttled"], None])
            rows.append([f"{label}: {workflow} wall s", phase["seconds"], None])
        rows.append([f"{label}: failed deployments", len(run["failed_deployments"]), 0])
        rows.append([f"{label}: leftovers", _leftover_text(run["leftovers"]), "none"])
    for run in sections.get("manager", {}).get("runs", []):
        if run["mode"] != "manager":
            continue
        label = f"manager mode, {run['topology']} (N={run['instances']})"
        for workflow in ("install", "uninstall"):
            phase = run["phases"].get(workflow)
            if phase:
                rows.append([f"{label}: {workflow} wall s", phase["seconds"], None])
                if phase.get("process_seconds"):
                    rows.append([f"{label}: {workflow} process s (median)", phase["process_seconds"]["median"], None])
    client = sections.get("client", {})
    if client.get("plugin"):
        rows.append(["cold client, fresh process (import + build) s", client["plugin"].get("total"), None])
    if rows:
        print("Summary (figures, not assertions)")
        table(["figure", "measured", "target"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 10; T = 5 only; 4 throttled deployments")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench", help="folder for results.json, bench.png")
    parser.add_argument("--task-retries", type=int, default=100, help="workflow task retries (default 100)")
    parser.add_argument(
        "--retry-modes",
        default="standard,adaptive",
        help="aws_config retry_mode(s) the throttle section compares, each unpaced and paced (comma-separated)",
    )
    parser.add_argument("--task-retry-interval", type=float, default=1.0, help="seconds between task retries")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    args.retry_modes = [m.strip() for m in args.retry_modes.split(",") if m.strip()]
    if not args.retry_modes or set(args.retry_modes) - set(RETRY_MODES):
        parser.error(f"--retry-modes takes some of {', '.join(RETRY_MODES)}")

    # Fake credentials for the emulator, inherited by every child; nothing from the home folder.
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    results: dict[str, Any] = {"machine": machine(), "method": method(args), "sections": {}}
    info = results["machine"]
    say(
        f"machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), Python {info['python']}, "
        f"load {tuple(round(x, 2) for x in info['load_average_at_start'] or ())}"
    )
    say("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + f"; commit {info['commit']}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as folder, MotoServer() as emulator:
        bench = Bench(emulator, args, Path(folder))
        for section in SECTIONS:
            if section in chosen:
                results["sections"][section] = getattr(bench, section)()
    results["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    results["total_seconds"] = time.monotonic() - STARTED
    summary(results)
    out = args.out / "results.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    say(f"wrote {out}")
    picture = args.out / "bench.png"
    if plot(results, picture):
        say(f"wrote {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
