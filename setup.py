import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# The tools package (cfy-aws-migrate, cfy-aws-offline) reads these files; an
# installed package finds its copies in cloudify_aws_ec2_tools/data/, a clone
# the files themselves. Listed in MANIFEST.in too, for an sdist.
TOOLS_DATA = ["plugin.yaml", "offline/types.yaml", "offline/plugin-classic-dsl.yaml"]


class BuildPyWithToolsData(build_py):
    """build_py, then copies of TOOLS_DATA into the built tools package."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "cloudify_aws_ec2_tools" / "data"
        target.mkdir(parents=True, exist_ok=True)
        for name in TOOLS_DATA:
            shutil.copyfile(Path(__file__).parent / name, target / Path(name).name)


setup(
    name="cloudify-aws-ec2-plugin",
    version="2.1.0",
    description="Cloudify plugin for AWS EC2 (Python 3, boto3)",
    license="Apache License 2.0",
    packages=["ec2", "cloudify_aws_ec2_tools"],
    cmdclass={"build_py": BuildPyWithToolsData},
    entry_points={
        "console_scripts": [
            "cfy-aws-migrate = cloudify_aws_ec2_tools.migrate:main",
            "cfy-aws-offline = cloudify_aws_ec2_tools.offline:main",
        ]
    },
    python_requires=">=3.11",
    install_requires=[
        "boto3>=1.34,<2",
        "cloudify-common[dispatcher]>=7.0.5,<8",
        # cloudify-common 7's DSL parser (local workflows) imports pkg_resources,
        # which setuptools 82 removed and Python 3.12's venv no longer ships.
        "setuptools<82",
        # cloudify-common 7.0.5 (its REST client) imports `cgi`, which Python
        # 3.13 removed; legacy-cgi provides the same module.
        'legacy-cgi>=2.6; python_version >= "3.13"',
        # cloudify.utils imports `packaging`, falling back to distutils, which
        # Python 3.12 removed: without packaging it fails to import there.
        "packaging",
    ],
)
