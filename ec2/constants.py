"""Names and defaults shared by the resource modules."""

import re

# The plugin's node types.
INSTANCE = "cloudify.aws.nodes.Instance"
KEY_PAIR = "cloudify.aws.nodes.KeyPair"
SECURITY_GROUP = "cloudify.aws.nodes.SecurityGroup"
ELASTIC_IP = "cloudify.aws.nodes.ElasticIP"
NODE_TYPES = (INSTANCE, KEY_PAIR, SECURITY_GROUP, ELASTIC_IP)

# Runtime properties written by every resource type.
AWS_RESOURCE_ID = "aws_resource_id"
EXTERNAL_RESOURCE = "external_resource"

# Runtime properties written by the Instance type: on start, and on create.
INSTANCE_NETWORK_PROPERTIES = ("ip", "private_dns_name", "public_dns_name", "public_ip_address")
RESERVATION_ID = "reservation_id"

# Runtime properties written by the KeyPair type.
KEY_FILE_WRITTEN = "private_key_file"

# Runtime properties written by the ElasticIP type.
ALLOCATION_ID = "allocation_id"
ASSOCIATION_ID = "association_id"
ASSOCIATED_INSTANCE_ID = "associated_instance_id"

# Tags that tie an AWS resource to the node instance that made it.
TAG_DEPLOYMENT_ID = "cloudify:deployment-id"
TAG_NODE_INSTANCE_ID = "cloudify:node-instance-id"

# When this node instance's resource (or, on an ElasticIP, its association)
# was created, as ISO 8601 UTC: within the propagation window after it, a
# NotFound for that resource is EC2 catching up, not "gone".
CREATED_AT = "created_at"
ASSOCIATED_AT = "associated_at"
# Seconds; aws_config's propagation_timeout. Terraform waits 2 minutes too.
DEFAULT_PROPAGATION_TIMEOUT = 120

# Waiting policy: poll in-process for a bounded time, then hand back to the
# workflow engine with ctx.operation.retry.
DEFAULT_WAIT_TIMEOUT = 30
DEFAULT_WAIT_INTERVAL = 1
DEFAULT_RETRY_AFTER = 10

# botocore's retry policy, used unless aws_config says otherwise.
DEFAULT_RETRY_MODE = "standard"
DEFAULT_MAX_ATTEMPTS = 5
# Seconds. EC2 answers in well under a second; a hung endpoint must not hold a
# workflow worker for long: at most 5 x (5 + 20) s per call with the defaults.
DEFAULT_CONNECT_TIMEOUT = 5
DEFAULT_READ_TIMEOUT = 20

# boto 2 had us-east-1 as its default region; old blueprints rely on it.
DEFAULT_REGION = "us-east-1"

# Runtime property set just before a create's first mutating call.
CREATE_STARTED = "create_started"
# Folders the KeyPair create made for the private key file; delete removes them when empty.
KEY_FOLDERS_CREATED = "private_key_folders"
# Runtime property set while a create whose call botocore had to resend may
# have left a duplicate; delete then sweeps everything tagged as this node instance's.
CREATE_RESENT = "create_resent"

# IP protocols. EC2 may describe a rule's protocol by its number.
PROTOCOL_BY_NUMBER = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}
# Protocols whose FromPort..ToPort is a port range.
PORT_RANGE_PROTOCOLS = frozenset({"tcp", "udp", "6", "17"})
# Protocols whose FromPort and ToPort are an ICMP type and code (-1: any).
ICMP_PROTOCOLS = frozenset({"icmp", "icmpv6", "1", "58"})

# The shapes of AWS resource ids (and of a key pair name).
GROUP_ID_PATTERN = re.compile(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")
VPC_ID_PATTERN = re.compile(r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$")
IMAGE_ID_PATTERN = re.compile(r"^ami-[0-9a-f]{8,17}$")
INSTANCE_ID_PATTERN = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
ALLOCATION_ID_PATTERN = re.compile(r"^eipalloc-([0-9a-f]{8}|[0-9a-f]{17})$")
KEY_NAME_PATTERN = re.compile(r"^[\x20-\x7e]{1,255}$")
