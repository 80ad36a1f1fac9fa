"""What runs in the benchmark's child processes: deployments, and cold client builds.

Each job runs in a fresh process, so its first install builds its clients
from nothing (as `cfy install` does) and its peak memory is its own. Times are
``time.monotonic()`` readings, the same clock as the proxy's in the parent.
A job in ``manager`` mode runs each operation in a process of its own, from the
plugin venv the job names (tools.manager), and reports those processes.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tools import topology
from tools.local import LocalDeployment, write_blueprint
from tools.manager import ManagerDeployment, PluginVenv

# Imports the plugin's client factory and builds one client, in a fresh
# process; prints the times as JSON. The factory's name is looked up, so that
# the figure survives a refactoring of the plugin (None if not found).
COLD_CLIENT = r"""
import importlib, json, sys, time
config = json.loads(sys.argv[1])
started = time.perf_counter()
if sys.argv[2] == "plugin":
    factory = None
    for module, name in (("ec2.connection", "ec2_client"), ("ec2.aws", "ec2_client"), ("ec2.aws", "client")):
        try:
            factory = getattr(importlib.import_module(module), name)
            break
        except (ImportError, AttributeError):
            continue
    if factory is None:
        print(json.dumps(None))
        sys.exit(0)
    imported = time.perf_counter()
    factory(config)
else:
    import boto3
    imported = time.perf_counter()
    boto3.session.Session().client("ec2", region_name=config["region_name"], endpoint_url=config["endpoint_url"])
built = time.perf_counter()
print(json.dumps({"import": imported - started, "build": built - imported, "total": built - started}))
"""


def cold_client(aws_config: dict, kind: str, repeat: int) -> dict | None:
    """Median seconds to import and build an EC2 client in a fresh Python process."""
    runs = []
    for _ in range(repeat):
        result = subprocess.run(
            [sys.executable, "-c", COLD_CLIENT, json.dumps(aws_config), kind],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).resolve().parent.parent,
        )
        if result.returncode != 0:
            return {"error": result.stderr.strip().splitlines()[-1:]}
        measured = json.loads(result.stdout)
        if measured is None:
            return None
        runs.append(measured)
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]} | {"runs": len(runs)}


def deployment(job: dict, blueprint: Path, name: str, key_path: Path) -> LocalDeployment:
    """The job's deployment: in memory, or with ``mode`` "manager" in a FileStorage
    beside the job's folder, its operations each in a process of the job's plugin venv."""
    inputs = {"key_path": str(key_path)}
    if job.get("mode") != "manager":
        return LocalDeployment(blueprint, name=name, inputs=inputs)
    plugin = PluginVenv(Path(job["plugin_venv"]), Path(job["wagon"]))
    storage = Path(job["folder"]).with_name(f"{job['name']}-storage")  # not in the blueprint's folder, which it copies
    return ManagerDeployment(blueprint, name=name, inputs=inputs, storage_dir=storage, plugin=plugin)


def processes_of(deployed: LocalDeployment) -> list:
    """The operation processes of a deployment in manager mode, so far (none in memory)."""
    return deployed.processes if isinstance(deployed, ManagerDeployment) else []


def deploy(job: dict) -> dict:
    """Installs and uninstalls a topology ``job["cycles"]`` times; returns each phase's times and events."""
    folder = Path(job["folder"])
    aws_config = job["aws_config"]
    if job["topology"] == "reference":
        nodes = topology.reference(aws_config)
    else:
        nodes = topology.fleet(aws_config, job["instances"], job.get("elastic_ips", 0))
    blueprint = write_blueprint(folder, nodes, inputs=topology.INPUTS)
    phases: list[dict[str, Any]] = []
    for cycle in range(job["cycles"]):
        name = f"{job['name']}-{cycle}"
        key_path = folder / "keys" / f"{name}.pem"
        deployed = deployment(job, blueprint, name, key_path)
        for workflow in ("install", "uninstall"):
            before = dict(deployed.tally.events)
            processes_before = len(processes_of(deployed))
            started = time.monotonic()
            error = ""
            try:
                deployed.execute(
                    workflow, task_retries=job["task_retries"], task_retry_interval=job["task_retry_interval"]
                )
            except Exception as failure:  # the workflow failed: report it, and still uninstall
                reasons = [line for line in deployed.tally.last if "Task failed" in line]
                error = (reasons[-1] if reasons else traceback.format_exception_only(failure)[-1]).strip()
            ended = time.monotonic()
            events = {k: deployed.tally.events[k] - before.get(k, 0) for k in deployed.tally.events}
            processes = [p.as_dict() for p in processes_of(deployed)[processes_before:]]
            phases.append(
                {
                    "cycle": cycle,
                    "phase": workflow,
                    "started": started,
                    "ended": ended,
                    "seconds": ended - started,
                    "ok": not error,
                    "error": error[:400],
                    "rescheduled": events.get("rescheduled", 0),
                    "failed_tasks": events.get("failed", 0),
                    "processes": processes,
                }
            )
    return {
        "name": job["name"],
        "phases": phases,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(job: dict, results: Any) -> None:
    """A child process's entry point: runs one job and puts ``(name, result)`` on the queue."""
    try:
        result = deploy(job)
    except BaseException as error:  # reported by the parent as this job's failure
        result = {"name": job["name"], "phases": [], "error": "".join(traceback.format_exception_only(error)).strip()}
    results.put((job["name"], result))
