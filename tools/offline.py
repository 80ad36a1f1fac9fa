"""``python -m tools.offline`` in a clone: the installed command is
``cfy-aws-offline`` (``python -m cloudify_aws_ec2_tools.offline``). This
module is that one: ``tools.offline`` and ``cloudify_aws_ec2_tools.offline``
are the same module object, so attributes set on either are seen by both."""

import sys

from cloudify_aws_ec2_tools import offline

if __name__ == "__main__":
    sys.exit(offline.main(prog="python -m tools.offline"))
sys.modules[__name__] = offline
