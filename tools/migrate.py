"""``python -m tools.migrate`` in a clone: the installed command is
``cfy-aws-migrate`` (``python -m cloudify_aws_ec2_tools.migrate``). This
module is that one: ``tools.migrate`` and ``cloudify_aws_ec2_tools.migrate``
are the same module object, so attributes set on either are seen by both."""

import sys

from cloudify_aws_ec2_tools import migrate

if __name__ == "__main__":
    sys.exit(migrate.main(prog="python -m tools.migrate"))
sys.modules[__name__] = migrate
