"""ClassAd values as the schedd and the shadow read them: the one quoting function.

The schedd stores job attributes edited with Schedd.edit, and the shadow
those set through chirp, by parsing their text with the old ClassAd syntax,
in which a backslash is kept as it is and only a quote is escaped. Values
are therefore written with the bindings' own old-syntax printer, never by
hand, so what a user or a node sends is what condor_q shows.

Seen on the testbed (HTCondor 23.9), through both Schedd.edit and chirp:
backslashes, quotes, tabs and UTF-8 arrive exactly (new-syntax quoting, as
classad2.quote writes it, would arrive with backslashes doubled, UTF-8 as
octal escapes and a line break as a backslash and an n). A line break cannot
be stored at all, since each job attribute is one line of the schedd's job
queue log: Schedd.edit is refused, and chirp's set_job_attr reports success
but stores undefined. So literal() refuses line breaks (and NUL), and the
node flattens its messages to one line.
"""
from __future__ import annotations

import classad2

# A job attribute is one line of the schedd's job queue log.
_UNSTORABLE = ("\n", "\r", "\0")


def literal(value: str | int | bool | None) -> str:
    """VALUE as old-syntax ClassAd literal text (None: undefined)."""
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write {type(value).__name__} as a ClassAd literal")
    if any(c in value for c in _UNSTORABLE):
        raise ValueError("a job attribute cannot hold line breaks or NUL characters")
    text = classad2.ClassAd({"v": value}).printOld().strip()
    return text.partition("=")[2].strip()


def value_of(text: str) -> object:
    """The value of old-syntax ClassAd literal TEXT (as condor_chirp prints it); None if undefined."""
    ad = classad2.parseOne(f"v = {text}", classad2.ParserType.Old)
    value = ad.eval("v")
    return None if value is classad2.Value.Undefined else value
