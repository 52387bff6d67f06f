"""Reading and writing the job's ClassAd in the schedd from inside a running job.

Uses condor_chirp (needs ``+WantIOProxy = true`` on the job), which talks to
the job's shadow. Values go over as old-syntax ClassAd literals
(condor_cloud.classads), which the shadow parses, so strings are never
expressions and arrive as they were sent.

A shadow that does not answer (its schedd restarting or paused, the network
down) must never harm a running guest: every failure is a ChirpError, and
JobAd queues reports and retries them with back-off while the guest runs on.
"""
from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from condor_cloud.classads import literal, value_of
from condor_cloud.errors import CloudError

log = logging.getLogger("condor-cloud")

TIMEOUT = 10.0  # seconds for one condor_chirp call; the shadow normally answers in well under one


class ChirpError(CloudError):
    """The job's ad could not be read or written through the shadow (this time)."""


class Chirp:
    def __init__(self, binary: Path, timeout: float = TIMEOUT):
        self.binary, self.timeout = binary, timeout

    @classmethod
    def from_condor(cls) -> Chirp:
        import htcondor2
        return cls(Path(htcondor2.param["LIBEXEC"]) / "condor_chirp")

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run([str(self.binary), *args], capture_output=True, encoding="utf-8",
                                  errors="replace", timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise ChirpError(f"condor_chirp {args[0]}: the shadow did not answer in {self.timeout:.0f} s") from None
        except OSError as e:
            raise ChirpError(f"cannot run {self.binary}: {e.strerror}") from None
        if done.returncode != 0:
            raise ChirpError(f"condor_chirp {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout.strip()

    def set(self, attr: str, value: Any) -> None:
        self._run("set_job_attr", attr, literal(value))

    def get(self, attr: str) -> Any:
        """The attribute's value, or None where it is undefined."""
        text = self._run("get_job_attr", attr)
        try:
            return value_of(text) if text else None
        except (KeyError, ValueError):
            raise ChirpError(f"condor_chirp get_job_attr {attr}: {text[:100]!r} is not a ClassAd value") from None


class Backoff:
    """When to talk to the shadow again: at once while it answers; after failures, FIRST
    seconds, doubling up to MOST."""

    def __init__(self, first: float = 2.0, most: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.first, self.most, self.clock = first, most, clock
        self.delay = 0.0
        self.next_try = 0.0

    def ready(self) -> bool:
        return self.clock() >= self.next_try

    def failed(self) -> float:
        self.delay = min(self.most, self.delay * 2 or self.first)
        self.next_try = self.clock() + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.delay, self.next_try = 0.0, 0.0


class JobAd:
    """The job's ad as the wrapper sees it. Reports are queued (the newest value of each
    attribute wins) and sent in order while the shadow answers; reads and reports share
    one back-off, so a shadow that does not answer is asked less and less often."""

    def __init__(self, chirp: Chirp, backoff: Backoff | None = None):
        self.chirp = chirp
        self.backoff = backoff or Backoff()
        self.pending: dict[str, Any] = {}

    def report(self, attr: str, value: Any) -> None:
        """Set ATTR to VALUE (None: undefined) in the job ad, now or once the shadow answers."""
        self.pending.pop(attr, None)
        self.pending[attr] = value

    def flush(self) -> bool:
        """Send what is pending, if the back-off allows; True once nothing is pending."""
        while self.pending and self.backoff.ready():
            attr, value = next(iter(self.pending.items()))
            try:
                self.chirp.set(attr, value)
            except ChirpError as e:
                self._failed(e)
                return False
            except (TypeError, ValueError) as e:  # no job attribute can hold it: it can never go
                log.error("not reporting %s = %r: %s", attr, value, e)
            self.backoff.succeeded()
            del self.pending[attr]
        return not self.pending

    def flush_until(self, deadline: float) -> bool:
        """Keep sending what is pending until DEADLINE (monotonic); True if all went."""
        while not self.flush():
            wait = self.backoff.next_try - time.monotonic()
            if time.monotonic() + max(wait, 0) > deadline:
                log.warning("could not report %s to the job ad: the shadow does not answer",
                            ", ".join(self.pending))
                return False
            time.sleep(max(wait, 0))
        return True

    def read(self, attr: str) -> tuple[bool, Any]:
        """(True, value) if the shadow answered, (False, None) if it did not or may not be asked yet."""
        if not self.backoff.ready():
            return False, None
        try:
            value = self.chirp.get(attr)
        except ChirpError as e:
            self._failed(e)
            return False, None
        self.backoff.succeeded()
        return True, value

    def _failed(self, e: ChirpError) -> None:
        log.warning("%s; the guest runs on, trying again in %.0f s", e, self.backoff.failed())
