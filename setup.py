from setuptools import setup

setup(
    name="cloudify-aws-ec2-plugin",
    version="2.1.0",
    description="Cloudify plugin for AWS EC2 (Python 3, boto3)",
    license="Apache License 2.0",
    packages=["ec2"],
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
