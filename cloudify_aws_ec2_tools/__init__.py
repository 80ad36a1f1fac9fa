"""The plugin's command-line tools, installed with it (pip or the wagon):

- ``cfy-aws-migrate`` (``python -m cloudify_aws_ec2_tools.migrate``): rewrites
  a blueprint written for the classic AWS plugin for cloudify-common 7;
- ``cfy-aws-offline`` (``python -m cloudify_aws_ec2_tools.offline``): serves
  the classic import URLs offline (cfy's import-resolver rules).

In a clone, ``python -m tools.migrate`` and ``python -m tools.offline`` run the
same code."""
