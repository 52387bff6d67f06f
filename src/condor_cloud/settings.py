"""condor-cloud's settings, read from the HTCondor configuration (CONDOR_CLOUD_* knobs)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from condor_cloud.errors import CloudError


@dataclass(frozen=True)
class Settings:
    # Published images, NFS-shared from the master; admins copy new ones into
    # staging/ and rename them in.
    shared_images: Path = Path("/var/lib/condor-cloud/shared_images")
    # This node's copies of images, one per image.
    local_cache: Path = Path("/var/lib/condor-cloud/local_cache")
    # Largest total size of local_cache in MiB; least recently used images
    # that no instance uses are evicted to stay below it.
    cache_size_limit_mib: int = 20480
    # Per-instance disks (qcow2 overlays on cached images) and locks.
    instances: Path = Path("/var/lib/condor-cloud/instances")
    libvirt_uri: str = "qemu:///system"
    # The bridge that instances' network interfaces join.
    bridge: str = "br0"
    # kvm, qemu (software emulation), or auto: kvm if libvirt offers it.
    domain_type: str = "auto"
    # Seconds a guest gets to power off after an ACPI shutdown before it is destroyed.
    shutdown_timeout: int = 60
    # Where to learn a guest's IPv4 address, tried in order: assigned (the
    # address the cloud gave it, once this node's ARP probe finds it at the
    # guest's MAC), leases (the DHCP server's lease file), libvirt (the guest
    # agent, where the image runs one, and libvirt's view of the ARP table),
    # neighbours (this node's ARP table), probe (an ARP probe of dhcp_range).
    address_sources: tuple[str, ...] = ("assigned", "leases", "libvirt", "neighbours", "probe")
    dhcp_leases: Path = Path("/var/lib/misc/dnsmasq.leases")
    # FIRST-LAST: the addresses the LAN's DHCP server hands out, which nodes
    # probe for guests that take their address by DHCP (empty: no probing).
    dhcp_range: str = ""
    # The node's reconciler reads the schedd's queue with the token in this
    # directory (owned by condor, mode 0700): one made with
    # condor_token_create -authz READ, so it can read and nothing else.
    reconciler_tokens: Path = Path("/etc/condor/condor-cloud-tokens.d")

    # -- the master: the API -------------------------------------------------
    # FIRST-LAST/PREFIX: addresses the cloud assigns to instances itself
    # (outside any DHCP server's range); empty: guests take theirs by DHCP.
    address_pool: str = ""
    # The rest of the guests' static set-up when a pool is used (may be empty).
    gateway: str = ""
    nameservers: tuple[str, ...] = ()
    # The API's own records: API users' keys (keys.sqlite), the sessions' key.
    state: Path = Path("/var/lib/condor-cloud/state")
    # The VM wrapper's path on the nodes.
    wrapper: str = "/usr/libexec/condor-cloud/vm-wrapper"
    # Instances' console and wrapper logs, on the master.
    logs: Path = Path("/var/lib/condor-cloud/logs")
    # The files of the queue service and the command line (both the instances'
    # user): the create lock. That user's alone (mode 0700).
    queue_state: Path = Path("/var/lib/condor-cloud/queue")
    # The queue service's socket: the API asks it for every change to the queue
    # (it holds a READ-only token itself).
    queue_socket: Path = Path("/run/condor-cloud/queue.sock")
    api_address: str = "127.0.0.1"
    api_port: int = 3002
    # The API authenticates to HTCondor with the token in this directory only
    # (the API's user's alone, mode 0700): one limited to READ (condor-cloud
    # setup master makes it); it changes the queue through the queue service.
    api_tokens: Path = Path("/etc/condor-cloud/tokens.d")
    # "NAME:PASSWORD [admin]" lines; must be readable by the API's user only.
    api_credentials: Path = Path("/etc/condor-cloud/api-credentials")
    # HTTPS: a PEM certificate (chain) and its private key. Without them the API
    # listens only on a loopback address unless plain HTTP is allowed.
    api_tls_certificate: str = ""
    api_tls_key: str = ""
    api_allow_plain_http: bool = False
    # Addresses or networks of TLS-terminating proxies in front of the API, whose
    # X-Forwarded-Proto, -Host and -For headers are believed (none: nobody's).
    api_forwarded_allow_ips: tuple[str, ...] = ()
    # Seconds a request waits for HTCondor (or shared_images) before it gets 502.
    api_condor_timeout: int = 10
    # name:memory_mib:cpus, comma separated; memory and cpus are a number
    # (fixed), FIRST-LAST (a range) or A|B|C (a choice).
    hardware_profiles: str = "small:512:1, medium:1024:2, large:2048:4"
    # Instances (not yet destroyed) an ordinary API user may have at once; 0: no
    # limit. Admins have none. Keeps one user from taking the whole address pool.
    user_instance_limit: int = 50
    # Largest user_data accepted, in base64 characters.
    user_data_limit: int = 65535
    # Seconds an instance's job lease lasts (condor's JobLeaseDuration): a
    # running instance outlives an unreachable schedd this long before its
    # node stops it, and an instance whose node died (or whose startd was
    # restarted) shows as running this long before it is queued again.
    job_lease: int = 1200

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Settings:
        """Settings from config knobs named CONDOR_CLOUD_<FIELD> (upper case)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = params.get(f"CONDOR_CLOUD_{f.name.upper()}")
            if raw is None or raw.strip() == "":
                continue
            default = f.default
            try:
                if isinstance(default, Path):
                    values[f.name] = Path(raw.strip())
                elif isinstance(default, bool):
                    values[f.name] = _boolean(raw)
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, tuple):
                    values[f.name] = tuple(s.strip() for s in raw.replace(",", " ").split())
                else:
                    values[f.name] = raw.strip()
            except ValueError:
                kind = "true or false" if isinstance(default, bool) else "a whole number"
                raise CloudError(f"CONDOR_CLOUD_{f.name.upper()} = {raw!r} is not {kind}; "
                                 "fix it in /etc/condor/config.d") from None
        return cls(**values)

    @classmethod
    def from_condor(cls) -> Settings:
        import htcondor2
        return cls.from_params({k: v for k, v in htcondor2.param.items() if k.startswith("CONDOR_CLOUD_")})


def _boolean(raw: str) -> bool:
    """A condor configuration boolean (true/false, yes/no, 1/0; any case)."""
    value = raw.strip().lower()
    if value in ("true", "yes", "1", "t"):
        return True
    if value in ("false", "no", "0", "f"):
        return False
    raise ValueError(raw)
