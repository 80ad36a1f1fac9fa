"""Benchmarks: prints how fast and how big the plugin is on the moto emulator.

    make bench            (or: .venv/bin/python -m bench.run)

Figures only; nothing here asserts on them. Targets a careful operator would
watch: building a client well under a second, a cached one in microseconds,
an install plus uninstall of five key pairs and a security group in a
few seconds, and peak memory of the whole run in the low hundreds of MiB.
"""

from __future__ import annotations

import contextlib
import io
import resource
import statistics
import tempfile
import time
from pathlib import Path

from ec2 import connection
from tests.support import LocalDeployment, MotoServer, quiet_logs, write_blueprint


def timed(action, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def report(name: str, times: list[float]) -> None:
    median, worst = statistics.median(times) * 1000, max(times) * 1000
    print(f"{name:<44} median {median:9.2f} ms   max {worst:9.2f} ms   n={len(times)}")


def main() -> None:
    quiet_logs()
    server = MotoServer()
    try:
        config = {
            "endpoint_url": server.url,
            "region_name": "us-east-1",
            "aws_access_key_id": "bench",
            "aws_secret_access_key": "bench",
        }

        def new_client():
            connection._cached_client.cache_clear()
            connection.ec2_client(config)

        report("client factory, uncached", timed(new_client, 10))
        report("client factory, cached", timed(lambda: connection.ec2_client(config), 1000))

        with tempfile.TemporaryDirectory() as folder:
            nodes = {
                "group": {
                    "type": "cloudify.aws.nodes.SecurityGroup",
                    "properties": {
                        "aws_config": config,
                        "rules": [
                            {"ip_protocol": "tcp", "from_port": port, "to_port": port, "cidr_ip": "0.0.0.0/0"}
                            for port in (22, 80, 443)
                        ],
                    },
                },
            }
            for index in range(5):
                nodes[f"key{index}"] = {
                    "type": "cloudify.aws.nodes.KeyPair",
                    "properties": {"aws_config": config, "private_key_path": str(Path(folder) / f"key{index}.pem")},
                }
            blueprint = write_blueprint(Path(folder), nodes)

            def install_and_uninstall():
                with contextlib.redirect_stdout(io.StringIO()):
                    deployment = LocalDeployment(blueprint)
                    deployment.install()
                    deployment.uninstall()

            report("install + uninstall, 5 keys + 1 group", timed(install_and_uninstall, 5))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{'peak resident memory of this process':<44} {peak:9.1f} MiB")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
