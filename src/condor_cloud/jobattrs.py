"""The ClassAd attributes that carry the cloud: every name the project reads or writes.

An instance is a vanilla job whose executable is the VM wrapper and whose
``HookKeyword`` selects condor-cloud's hooks on the node.

Set at submit (by the API or CLI):
  CloudImage        string  image id: a file name in shared_images
  CloudName         string  the instance's name, as the user gave it
  CloudOwner        string  the API user who created it
  CloudMAC          string  the guest NIC's MAC (52:54:00:xx:xx:xx, unique per instance)
  CloudUserData     string  user data, base64 (may be empty)
  CloudReservation  string  the EC2 reservation (one RunInstances) it was launched in, if any
  CloudKeyName      string  the name of the API user's SSH key the instance was launched with
  CloudPublicKey    string  that key's public half (one authorized_keys line), for the guest
  CloudClientToken  string  names the create that made it (the client's client_token, else
                            a new one): a create retried with that token finds this job; for
                            an EC2 launch, RunInstances' ClientToken, a dot and the index
  CloudAssignedAddress string  the IPv4 address (with prefix length) the cloud gave the
                            instance from CONDOR_CLOUD_ADDRESS_POOL; absent when the guest
                            takes its address by DHCP
  CloudGateway, CloudNameservers string  the rest of that static set-up (may be empty)
  CloudHardwareProfile string  the hardware profile it was launched with
  CloudRealm        string  the realm it was launched in
  RequestMemory     int     guest memory, MiB
  RequestCpus       int     guest vCPUs

Requests, changed with one Schedd.edit (flag SetDirty, so the schedd forwards
it to the running job) while the instance runs:
  CloudRequest      string  "SERIAL:ACTION", ACTION "stop" (ACPI shutdown, then
                            hold with the disk kept) or "reboot"; SERIAL grows
                            with every request and the wrapper carries out each
                            serial once. One attribute, so a request is one edit.

Reported by the node (chirp; a report the shadow does not take is retried):
  CloudVMState      string  RUNNING, STOPPING, STOPPED: the last state its wrapper
                            reported (reset to undefined by start)
  CloudAddresses    string  the guest's IPv4 addresses, comma separated (undefined
                            while the guest is not running)
  CloudDiskNode     string  the node (Machine) holding the instance's latest disk
  CloudPinnedNode   string  the node the instance must start on, because its disk is
                            kept there on purpose: set when the guest stops or a start
                            fails (and by the API's start, from CloudDiskNode), cleared
                            once the guest runs again
  CloudDomain       string  the libvirt domain name on that node
  CloudError        string  why the instance could not start (the hold reason says it too)

Published by each node's startd cron in its machine ad:
  HasCondorCloud    bool    the node runs condor-cloud (set in its configuration)
  CloudCachedImages list    ids of the images in its local cache
  CloudCacheFreeMiB int     room left in its local cache
  CloudLibvirtOK    bool    its libvirtd answers
"""
from __future__ import annotations

# -- the job ad -----------------------------------------------------------------
IMAGE = "CloudImage"
NAME = "CloudName"
OWNER = "CloudOwner"
MAC = "CloudMAC"
USER_DATA = "CloudUserData"
KEY_NAME = "CloudKeyName"
RESERVATION = "CloudReservation"
CLIENT_TOKEN = "CloudClientToken"
PUBLIC_KEY = "CloudPublicKey"
ASSIGNED_ADDRESS = "CloudAssignedAddress"
GATEWAY = "CloudGateway"
NAMESERVERS = "CloudNameservers"
HARDWARE_PROFILE = "CloudHardwareProfile"
REALM = "CloudRealm"
MEMORY = "RequestMemory"
CPUS = "RequestCpus"
REQUEST = "CloudRequest"
VM_STATE = "CloudVMState"
ADDRESSES = "CloudAddresses"
DISK_NODE = "CloudDiskNode"
PINNED_NODE = "CloudPinnedNode"
DOMAIN = "CloudDomain"
ERROR = "CloudError"

HOOK_KEYWORD = "CLOUD"

# -- the machine ad ---------------------------------------------------------------
HAS_CONDOR_CLOUD = "HasCondorCloud"
CACHED_IMAGES = "CloudCachedImages"
CACHE_FREE_MIB = "CloudCacheFreeMiB"
LIBVIRT_OK = "CloudLibvirtOK"

# -- how an instance ends a run -----------------------------------------------------
# The wrapper's exit codes when the guest was shut down by a stop request, and
# when it powered itself off; the job's on_exit_hold turns both into a hold
# (the STOPPED state), with the disk kept for the next start.
EXIT_STOPPED = 3
EXIT_POWERED_OFF = 5
STOPPED_HOLD_SUBCODE = 1
# The wrapper's exit code when the instance could not be started; the reason
# is in CloudError, and the job's on_exit_hold makes it the hold reason. Any
# other end of the wrapper (a signal, a crash) is held with this subcode too.
EXIT_FAILED = 4
FAILED_HOLD_SUBCODE = 2
# Seconds condor gives the wrapper after SIGTERM (job_max_vacate_time) before it kills it.
MAX_VACATE_TIME = 90

# VM states the wrapper reports.
RUNNING, STOPPING, STOPPED = "RUNNING", "STOPPING", "STOPPED"


def parse_request(value: object) -> tuple[int, str]:
    """CloudRequest's (serial, action); (0, "") when there is none or it is malformed."""
    serial, _, action = str(value or "").partition(":")
    return (int(serial), action) if serial.isdigit() else (0, "")


def request_value(serial: int, action: str) -> str:
    return f"{serial}:{action}"
