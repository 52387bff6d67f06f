"""Why a pending instance waits: what it asks for, against what the pool's nodes offer.

It reads the same facts the instance's requirements test (submit.py): a node
that runs condor-cloud, a working libvirt, the node holding the instance's
disk, and room for its CPUs and memory.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from condor_cloud.cloud import Instance, Node


def _size(cpus: int, memory_mib: int) -> str:
    return f"{cpus} CPU{'' if cpus == 1 else 's'} and {memory_mib} MiB"


def why_pending(instance: Instance, nodes: Sequence[Node]) -> str:
    """What keeps idle INSTANCE from starting on NODES; "" when a node has room for it now."""
    cpus, memory = instance.cpus or 1, instance.memory_mib or 0
    asks = f"asks for {_size(cpus, memory)}"
    if not nodes:
        return "no node runs condor-cloud: no startd advertises HasCondorCloud (see condor_status)"
    pinned = instance.node
    candidates = [n for n in nodes if not pinned or n.name == pinned]
    if not candidates:
        return f"its disk is on {pinned}, which is not in the pool now; it starts when that node is back"
    working = [n for n in candidates if n.libvirt_ok]
    if not working:
        return f"libvirt does not answer on {', '.join(n.name for n in candidates)}"
    big_enough = [n for n in working if (n.total_cpus or n.free_cpus) >= cpus
                  and (n.total_memory_mib or n.free_memory_mib) >= memory]
    if not big_enough:
        largest = max(working, key=lambda n: (n.total_memory_mib, n.total_cpus))
        return (f"{asks}; no node is that large (the largest, {largest.name}, has "
                f"{_size(largest.total_cpus, largest.total_memory_mib)})")
    if any(n.free_cpus >= cpus and n.free_memory_mib >= memory for n in big_enough):
        return ""
    roomiest = max(big_enough, key=lambda n: min(n.free_cpus / cpus, n.free_memory_mib / max(memory, 1)))
    return (f"{asks}; waiting for room: the most free on one node is "
            f"{_size(roomiest.free_cpus, roomiest.free_memory_mib)} ({roomiest.name})")
