"""ClassAd values as the schedd and the shadow read them: the one quoting function.

The schedd stores job attributes edited with Schedd.edit, and the shadow
those set through chirp, by parsing their text with the old ClassAd syntax,
in which a backslash is kept as it is and only a quote is escaped. Values
are therefore written with the bindings' own old-syntax printer, never by
hand, so what a user or a node sends is what condor_q shows.
"""
from __future__ import annotations

import classad2

# A job attribute is one line of the schedd's job queue log.
_UNSTORABLE = ("\n", "\r", "\0")


def literal(value: str | int | bool) -> str:
    """VALUE as old-syntax ClassAd literal text."""
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
