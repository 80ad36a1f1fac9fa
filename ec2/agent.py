"""Whether the Cloudify agent the workflow installs on an Instance can succeed.

Cloudify 7's engine installs an agent on every Compute node whose
``install_method`` (from ``install_agent``, else ``agent_config``) is not
``none``; the types' default is ``remote``. That step runs after the instance
is launched, so a doomed one costs an instance. Checked by ``validation.create``
and ``aws_preflight``, before anything is launched:

- **locally** (``cfy`` or ``cloudify.workflows.local``) no agent can be
  installed: ``cloudify.interfaces.cloudify_agent.create`` needs a manager.
  Install, heal and scale are refused; other workflows (for example a
  validation run by ``execute_operation``) only warn, since they install no agent.
- **on a manager**, a ``remote`` install with no key pair (no KeyPair node,
  no ``parameters.key_name``, and Cloudify 7 has no provider context's
  ``agents_keypair``) can only log in with credentials baked into the image
  or given in ``agent_config``: a warning, since those may exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudify import constants as cloudify_constants
from cloudify.utils import internal as cloudify_internal

NONE = cloudify_constants.AGENT_INSTALL_METHOD_NONE
REMOTE = cloudify_constants.AGENT_INSTALL_METHOD_REMOTE
AGENT_CREATE = "cloudify.interfaces.cloudify_agent.create"
# The built-in workflows that install agents on the hosts they create.
INSTALLING_WORKFLOWS = frozenset({"install", "heal", "scale", "install_new_agents"})
FIX_LOCAL = "set agent_config: {install_method: none} (or install_agent: false) to run it without a manager"
FIX_KEYLESS = (
    "connect the instance to a cloudify.aws.nodes.KeyPair node, or give parameters.key_name, "
    "or set agent_config.install_method to init_script or none"
)


def install_method(properties: Mapping[str, Any]) -> str:
    """The method the engine will use: cloudify-common's reading, ``remote`` when unset."""
    return cloudify_internal.get_install_method(properties) or REMOTE


def local_install_problem(properties: Mapping[str, Any]) -> str | None:
    """Why an agent install cannot succeed without a manager; None if none is installed."""
    method = install_method(properties)
    if method == NONE:
        return None
    return (
        f"property 'agent_config.install_method' is '{method}': the workflow would launch the instance "
        f"and then fail at {AGENT_CREATE}, which needs a Cloudify manager. Fix: {FIX_LOCAL}"
    )


def keyless_remote_install(properties: Mapping[str, Any], has_key_pair: bool) -> str | None:
    """Why a remote agent install may fail to log in; None when a key pair is given."""
    if has_key_pair or install_method(properties) != REMOTE:
        return None
    return (
        "the agent installs remotely (agent_config.install_method 'remote') but the instance has no key pair: "
        "unless the image or agent_config carries other credentials, the agent cannot log in. "
        f"Fix: {FIX_KEYLESS}"
    )


def verdict(
    properties: Mapping[str, Any], *, local: bool, workflow: str | None, installs_agent: bool, has_key_pair: bool
) -> tuple[str | None, str | None]:
    """(refusal, warning) for an Instance about to launch, as the module docstring says."""
    if not installs_agent:
        return None, None
    if local:
        problem = local_install_problem(properties)
        if problem and workflow not in INSTALLING_WORKFLOWS:
            return None, f"{problem} (the {workflow} workflow installs no agent itself)"
        return problem, None
    return None, keyless_remote_install(properties, has_key_pair)
