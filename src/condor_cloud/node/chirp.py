"""Reading and writing the job's ClassAd in the schedd from inside a running job.

Uses condor_chirp (needs ``+WantIOProxy = true`` on the job). Values go over
as old-syntax ClassAd literals (condor_cloud.classads), which the shadow
parses, so strings are never expressions and arrive as they were sent.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from condor_cloud.classads import literal, value_of


class Chirp:
    def __init__(self, binary: Path):
        self.binary = binary

    @classmethod
    def from_condor(cls) -> Chirp:
        import htcondor2
        return cls(Path(htcondor2.param["LIBEXEC"]) / "condor_chirp")

    def _run(self, *args: str) -> str:
        done = subprocess.run([str(self.binary), *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise OSError(f"condor_chirp {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout.strip()

    def set(self, attr: str, value: Any) -> None:
        self._run("set_job_attr", attr, literal(value))

    def get(self, attr: str) -> Any:
        """The attribute's value, or None where it is undefined."""
        text = self._run("get_job_attr", attr)
        return value_of(text) if text else None
