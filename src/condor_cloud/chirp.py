"""Reading and writing the job's ClassAd in the schedd from inside a running job.

Uses condor_chirp (needs ``+WantIOProxy = true`` on the job). Values go over
as ClassAd literals made by classad2, so strings are never expressions.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import classad2


def literal(value: Any) -> str:
    """VALUE as ClassAd literal text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return classad2.quote(value)
    raise TypeError(f"cannot send {type(value).__name__} through chirp")


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
        if not text or text == "UNDEFINED":
            return None
        value = classad2.ExprTree(text).eval()
        return None if value is classad2.Value.Undefined else value
