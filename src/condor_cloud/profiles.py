"""Hardware profiles: named memory and CPU sizes, fixed, ranges or choices."""
from __future__ import annotations

import re
from dataclasses import dataclass

from condor_cloud.errors import CloudError, ParameterError

DIGITS = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Property:
    name: str            # "memory" or "cpu"
    unit: str            # "MB" or "count"
    param: str           # the create parameter that overrides it
    kind: str            # fixed, range or enum
    values: tuple[int, ...]  # fixed: (v,), range: (first, last), enum: choices

    @property
    def default(self) -> int:
        return self.values[0]

    def accept(self, raw: str | None) -> int:
        """The value for a create request (RAW from hwp_memory/hwp_cpu, or None)."""
        if raw is None or raw == "":
            return self.default
        if not DIGITS.fullmatch(raw):  # not int(): it takes "1_024", " 2" and non-ASCII digits
            raise ParameterError(f"{self.param} must be a whole number of {self.unit}, not {raw!r}")
        value = int(raw)
        ok = (value == self.values[0] if self.kind == "fixed" else
              self.values[0] <= value <= self.values[1] if self.kind == "range" else value in self.values)
        if not ok:
            raise ParameterError(f"{self.param}={value} is not allowed here: {self.describe()}")
        return value

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.name} is fixed at {self.values[0]} {self.unit}"
        if self.kind == "range":
            return f"{self.name} ranges from {self.values[0]} to {self.values[1]} {self.unit}"
        return f"{self.name} is one of {', '.join(map(str, self.values))} {self.unit}"


@dataclass(frozen=True)
class HardwareProfile:
    id: str
    memory: Property
    cpu: Property

    @property
    def properties(self) -> list[Property]:
        return [self.cpu, self.memory]


def _property(name: str, unit: str, param: str, spec: str) -> Property:
    try:
        if "-" in spec:
            first, last = (int(v) for v in spec.split("-", 1))
            if not 0 < first <= last:
                raise ValueError
            return Property(name, unit, param, "range", (first, last))
        if "|" in spec:
            return Property(name, unit, param, "enum", tuple(int(v) for v in spec.split("|")))
        return Property(name, unit, param, "fixed", (int(spec),))
    except ValueError:
        raise CloudError(f"hardware profile {name} {spec!r}: use a number, FIRST-LAST or A|B|C") from None


def parse_profiles(text: str) -> dict[str, HardwareProfile]:
    """'small:512:1, medium:1024:2' -> profiles by id (CONDOR_CLOUD_HARDWARE_PROFILES)."""
    profiles = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        parts = item.split(":")
        if len(parts) != 3 or not parts[0]:
            raise CloudError(f"CONDOR_CLOUD_HARDWARE_PROFILES entry {item!r}: use name:memory_mib:cpus")
        name, memory, cpus = parts
        profiles[name] = HardwareProfile(name, _property("memory", "MB", "hwp_memory", memory),
                                         _property("cpu", "count", "hwp_cpu", cpus))
    if not profiles:
        raise CloudError("CONDOR_CLOUD_HARDWARE_PROFILES names no profile")
    return profiles
