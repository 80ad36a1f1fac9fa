"""Run the example blueprint end to end with the Cloudify CLI.

By default everything happens on an EC2 emulator (a moto server started on
127.0.0.1 on a free port, with fake credentials): nothing reaches AWS. Steps:
start the emulator, prepare a private CFY_WORKDIR under build/demo/ (with the
offline import rules of tools.offline), `cfy init` the example, prove it with
the `aws_preflight` workflow, run `install`, print its outputs and runtime
properties, `cfy uninstall`, check with boto3 that nothing is left, stop the emulator. The
emulator and any running `cfy` are stopped on success, on failure, on Ctrl-C,
SIGTERM and SIGHUP (terminal closed); if this script is killed outright, the
emulator notices that its watchdog pipe closed and exits by itself.

Real AWS only with ``--target aws --inputs FILE`` (``make demo TARGET=aws
INPUTS=FILE``): then the credentials come from boto3's standard chain and it
costs money while the deployment exists.

Run it with the project's virtual environment (``make demo`` does), which has
the plugin, the ``cfy`` command and moto installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Run as `python examples/demo.py`: the project's own modules (tools, ec2) come from the checkout.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import offline  # noqa: E402
from tools.emulator import EmulatorError, MotoServer, die_with_parent  # noqa: E402

EXAMPLES = ROOT / "examples"
BLUEPRINT = EXAMPLES / "blueprint.yaml"
EMULATOR_INPUTS = EXAMPLES / "inputs-emulator.yaml"
BUILD = ROOT / "build" / "demo"
BLUEPRINT_ID = "cloudify-aws-demo"
CFY = Path(sys.executable).parent / "cfy"

# The plugin waits in-process up to wait_timeout (30 s) and then asks for a
# retry in retry_after (10 s); errors such as throttling are retried too. Each
# retry counts against --task-retries, so give enough for the slowest wait.
RETRIES = {"emulator": (10, 2), "aws": (60, 15)}
PLACEHOLDERS = ("REGION", "ami-XXXXXXXXXXXXXXXXX")
# aws_config keys that hold secrets (boto3 names and the classic boto 2 alias).
SECRET_KEYS = ("aws_secret_access_key", "aws_session_token", "security_token", "proxy_pass")
# The signals that end the demo cleanly, with exit code 128 + signal number.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class DemoError(Exception):
    """A step failed; the message says which and what to do."""


def say(text: str) -> None:
    show(f"\n==> {text}")


def show(text: str, file: Any = None) -> None:
    """Prints, ignoring a closed terminal (after SIGHUP) so cleanup goes on."""
    try:
        print(text, file=file or sys.stdout, flush=True)
    except OSError:
        pass


def write_private(path: Path, text: str) -> None:
    """Writes a file readable by its owner only (0600), atomically: a temporary
    file created with that mode and renamed over the target, so that the file
    is never world-readable, not even for a moment."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def start_emulator(log_path: Path) -> MotoServer:
    """A moto EC2 server in its own session on 127.0.0.1 (so a Ctrl-C in the
    terminal reaches only this script, which then stops it in order), tied to
    this script by a watchdog pipe on its stdin and, on Linux, by
    PR_SET_PDEATHSIG: it cannot outlive the demo."""
    try:
        return MotoServer(log_path=log_path, watchdog=True, death_signal=True, new_session=True, ready_timeout=60)
    except EmulatorError as error:
        raise DemoError(str(error)) from None


def emulator_environment(url: str) -> None:
    """Point boto3 (here and in cfy) at the emulator with fake credentials,
    and away from any real profile or credentials file."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )


def prepare_workdir(workdir: Path) -> None:
    """A CFY_WORKDIR whose import-resolver rules serve the standard and the
    classic import URLs from the project's offline files (tools.offline)."""
    os.environ["CFY_WORKDIR"] = str(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    offline.write_cfy_config(workdir)  # with the logging section cfy needs: no bare `cfy init` first


def cfy(*args: str, quiet: bool = False, capture: bool = False) -> str:
    """Runs a cfy command; raises DemoError when it fails. Unless quiet or
    captured, its output is shown as it comes, and the reasons of failed tasks
    (which cfy's own error message leaves out) are collected for the error."""
    command = [str(CFY), *args]
    shown = " ".join(args)
    if quiet or capture:
        # subprocess.run kills the child on any exception, KeyboardInterrupt too.
        result = subprocess.run(command, text=True, capture_output=True, preexec_fn=die_with_parent)
        if result.returncode != 0:
            raise DemoError(f"`cfy {shown}` failed with exit code {result.returncode}\n{result.stdout}{result.stderr}")
        return result.stdout
    show(f"$ cfy {shown}")
    reasons: list[str] = []
    process = subprocess.Popen(
        command, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
    )
    try:
        for line in process.stdout:
            show(line.rstrip("\n"))
            if "Task failed '" in line and " -> " in line:
                reasons.append(line.split(" -> ", 1)[1].strip())
            elif line.startswith("- node '"):  # a problem aws_preflight lists
                reasons.append(line[2:].strip())
        process.wait()
    finally:
        # On every way out (failure, signal, closed terminal) cfy must end too.
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    if process.returncode != 0:
        why = "".join(f"\n  - {reason}" for reason in dict.fromkeys(reasons))
        because = f"; because:{why}" if why else ""
        raise DemoError(f"`cfy {shown}` failed with exit code {process.returncode}{because}")
    return ""


def cfy_json(*args: str) -> Any:
    # In local mode cfy prints these as JSON already (and nothing with --json).
    text = cfy(*args, capture=True)
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise DemoError(f"`cfy {' '.join(args)}` printed no JSON:\n{text}")
    return json.JSONDecoder().raw_decode(text[start:])[0]


def show_deployment() -> list[dict]:
    """Prints the outputs and every node instance's runtime properties."""
    outputs = cfy_json("deployments", "outputs", "-b", BLUEPRINT_ID)
    say("Outputs")
    for name, value in outputs.items():
        if isinstance(value, dict) and "value" in value:
            value = value["value"]
        print(f"  {name:<12} {value}")
    instances = cfy_json("node-instances", "-b", BLUEPRINT_ID)
    say("Node instances and their runtime properties")
    for instance in sorted(instances, key=lambda i: i["node_id"]):
        print(f"  {instance['node_id']} ({instance['id']}, {instance['state']})")
        for key, value in sorted(instance.get("runtime_properties", {}).items()):
            print(f"      {key:<24} {json.dumps(value) if not isinstance(value, str) else value}")
    return instances


def check_nothing_left(instances: list[dict], aws_config: dict, emulator: bool) -> None:
    """Asks EC2 whether anything the deployment made is still there. On the
    emulator anything beyond its defaults is a leak; on AWS only the ids the
    deployment recorded are checked."""
    from ec2.connection import ec2_client

    client = ec2_client(aws_config)
    made = {i.get("runtime_properties", {}).get("aws_resource_id") for i in instances} - {None, ""}

    def ours(*ids: str | None) -> bool:
        return emulator or bool(made & set(ids))

    left = [
        f"instance {i['InstanceId']} ({i['State']['Name']})"
        for r in client.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated" and ours(i["InstanceId"])
    ]
    left += [f"key pair {k['KeyName']}" for k in client.describe_key_pairs()["KeyPairs"] if ours(k["KeyName"])]
    left += [
        f"security group {g['GroupId']} ({g['GroupName']})"
        for g in client.describe_security_groups()["SecurityGroups"]
        if g["GroupName"] != "default" and ours(g["GroupId"], g["GroupName"])
    ]
    left += [
        f"elastic IP {a['PublicIp']}"
        for a in client.describe_addresses()["Addresses"]
        if ours(a["PublicIp"], a.get("AllocationId"))
    ]
    if left:
        raise DemoError("uninstall left resources behind: " + ", ".join(left))
    print("  nothing left: the instance is terminated; the key pair, security group and elastic IP are gone")


def load_inputs(path: Path) -> dict:
    try:
        inputs = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise DemoError(f"cannot read the inputs file {path}: {error}") from None
    if not isinstance(inputs, dict):
        raise DemoError(f"the inputs file {path} must hold a mapping of input names to values")
    return inputs


def refuse_secrets(inputs: dict, path: Path) -> None:
    """Real AWS credentials belong in boto3's chain, not in an inputs file that
    gets copied around (and into cfy's deployment storage)."""
    aws_config = inputs.get("aws_config")
    found = [key for key in SECRET_KEYS if isinstance(aws_config, dict) and aws_config.get(key)]
    if found:
        raise DemoError(
            f"{path} holds credentials in aws_config ({', '.join(found)}). The demo refuses to copy secrets "
            "into its working folder and cfy's storage: remove them and let boto3 find them in its standard "
            "chain instead (AWS_PROFILE, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN in "
            "the environment, ~/.aws/credentials, or an instance role), or name a profile with "
            "aws_config.profile_name."
        )


def run(target: str, inputs_path: Path | None, retries: int | None, interval: int | None, workdir: Path) -> None:
    emulator: MotoServer | None = None
    installed = False
    try:
        if target == "emulator":
            inputs = load_inputs(inputs_path or EMULATOR_INPUTS)
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            say("Starting the EC2 emulator (moto server)")
            emulator = start_emulator(workdir / "moto.log")
            show(f"  listening on {emulator.url}, pid {emulator.process.pid}")
            emulator_environment(emulator.url)
            inputs["aws_config"] = {**(inputs.get("aws_config") or {}), "endpoint_url": emulator.url}
            inputs["key_path"] = str(workdir / "keys" / Path(str(inputs.get("key_path") or "demo.pem")).name)
        else:
            if inputs_path is None:
                raise DemoError("real AWS needs an inputs file: make demo TARGET=aws INPUTS=examples/inputs-aws.yaml")
            inputs = load_inputs(inputs_path)
            refuse_secrets(inputs, inputs_path)
            text = inputs_path.read_text()
            missing = [p for p in PLACEHOLDERS if p in text]
            if missing:
                raise DemoError(f"{inputs_path} still holds the placeholder(s) {missing}: fill them in first")
            if (workdir / ".cloudify" / "profiles" / "local" / "deployments" / BLUEPRINT_ID).exists():
                raise DemoError(
                    f"a previous real-AWS demo deployment is still recorded in {workdir}. Remove it first with\n"
                    f"  CFY_WORKDIR={workdir} {CFY} uninstall -b {BLUEPRINT_ID}\n"
                    f"then delete {workdir}."
                )
            print("  target: REAL AWS (region and credentials from the inputs and boto3's standard chain)")
        say(f"Preparing the cfy working directory {workdir}")
        prepare_workdir(workdir)
        resolved_inputs = workdir / "inputs.yaml"
        write_private(resolved_inputs, yaml.safe_dump(inputs, sort_keys=False))
        print(f"  inputs: {resolved_inputs}")

        default_retries, default_interval = RETRIES[target]
        retry_args = [
            "--task-retries",
            str(default_retries if retries is None else retries),
            "--task-retry-interval",
            str(default_interval if interval is None else interval),
        ]
        cfy("init", str(BLUEPRINT), "-b", BLUEPRINT_ID, "-i", str(resolved_inputs), quiet=True)
        say("Proving the deployment with aws_preflight: every check and a dry run of each create, creating nothing")
        cfy("executions", "start", "aws_preflight", "-b", BLUEPRINT_ID)
        say("Installing the example blueprint")
        installed = True
        cfy("executions", "start", "install", "-b", BLUEPRINT_ID, *retry_args)
        instances = show_deployment()

        say("Uninstalling")
        cfy("uninstall", "-b", BLUEPRINT_ID, *retry_args)
        installed = False

        say("Checking with boto3 that nothing is left")
        check_nothing_left(instances, inputs.get("aws_config") or {}, emulator is not None)
        say("Demo finished: installed, inspected and uninstalled the example blueprint")
    finally:
        try:
            if installed and target == "aws":
                cleanup_aws(retries)
        finally:
            if emulator is not None:
                say("Stopping the EC2 emulator")
                emulator.stop()


def cleanup_aws(retries: int | None) -> None:
    """After a failure or an interruption on real AWS, tries to uninstall so
    that nothing keeps costing money, and says what to do if that fails."""
    say("Cleaning up on AWS after the failure: uninstalling with ignore_failure")
    try:
        cfy(
            "uninstall",
            "-b",
            BLUEPRINT_ID,
            "-p",
            "ignore_failure=true",
            "--task-retries",
            str(60 if retries is None else retries),
            "--task-retry-interval",
            "15",
        )
    except (DemoError, KeyboardInterrupt) as error:
        print(
            f"!! cleanup did not finish ({error or 'interrupted'}). Resources may remain and cost money.\n"
            f"!! Retry with: CFY_WORKDIR={os.environ.get('CFY_WORKDIR')} {CFY} uninstall -b {BLUEPRINT_ID}\n"
            "!! and check the EC2 console for instances, key pairs, security groups and elastic IPs "
            "tagged example=cloudify-aws-plugin.",
            file=sys.stderr,
        )


class Interrupted(KeyboardInterrupt):
    """Raised by the signal handler; remembers which signal it was."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def catch_signals() -> None:
    """Ctrl-C, SIGTERM and a closed terminal (SIGHUP) all end the demo through
    its cleanup. Set explicitly: a background job of a non-interactive shell
    starts with SIGINT ignored, and SIGHUP would otherwise kill it outright."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("emulator", "aws"), default="emulator")
    parser.add_argument("--inputs", type=Path, help="inputs file (emulator default: examples/inputs-emulator.yaml)")
    parser.add_argument("--workdir", type=Path, help="working folder (default: build/demo/TARGET)")
    parser.add_argument("--task-retries", type=int, help="cfy --task-retries (default: 10 emulator, 60 aws)")
    parser.add_argument("--task-retry-interval", type=int, help="cfy --task-retry-interval (default: 2 / 15)")
    args = parser.parse_args(argv)
    if not CFY.exists():
        print(f"demo failed: {CFY} is missing; run `make demo`, which installs the Cloudify CLI", file=sys.stderr)
        return 2
    catch_signals()
    try:
        workdir = (args.workdir or BUILD / args.target).resolve()
        run(args.target, args.inputs, args.task_retries, args.task_retry_interval, workdir)
    except DemoError as error:
        show(f"\ndemo FAILED: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interruption:
        signum = getattr(interruption, "signum", signal.SIGINT)
        show(f"\ndemo INTERRUPTED ({signal.Signals(signum).name}): cleaned up and stopped", file=sys.stderr)
        return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
