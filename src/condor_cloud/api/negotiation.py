"""Which representation to answer with: ?format= first, then Accept by RFC 9110's rules.

Deltacloud's defaults hold: no Accept gives XML, and a browser's Accept (or */*)
gives HTML. Within Accept, the highest q-value wins; a media range's q-value is
that of its most specific range that matches (text/html beats text/* beats */*);
q=0 means "not acceptable"; equal q-values go to the more specific match, then
to the range the client listed first, then to OFFERS' order.
"""
from __future__ import annotations

XML, JSON, HTML = "application/xml", "application/json", "text/html"
FORMATS = {"xml": XML, "json": JSON, "html": HTML}
# The media types we can write, each answering as one of the three formats, in
# the order that breaks ties between ranges the client gave equal weight.
OFFERS = [("text/html", HTML), ("application/xml", XML), ("application/xhtml+xml", HTML),
          ("text/xml", XML), ("application/json", JSON)]


class NotAcceptable(ValueError):
    """Nothing we can write is acceptable; the message says what to ask for."""


def _ranges(accept: str) -> list[tuple[str, str, float, int]]:
    """(type, subtype, q, position) of each media range in an Accept header."""
    ranges = []
    for position, item in enumerate(accept.split(",")):
        kind, *params = (p.strip() for p in item.split(";"))
        if "/" not in kind:
            continue
        main, sub = (s.strip().lower() for s in kind.split("/", 1))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        ranges.append((main, sub, q, position))
    return ranges


def _match(media_type: str, ranges: list[tuple[str, str, float, int]]) -> tuple[float, int, int] | None:
    """(q, specificity, -position) of the most specific range that matches MEDIA_TYPE."""
    main, sub = media_type.split("/")
    best = None
    for r_main, r_sub, q, position in ranges:
        if (r_main, r_sub) == (main, sub):
            specificity = 2
        elif (r_main, r_sub) == (main, "*"):
            specificity = 1
        elif (r_main, r_sub) == ("*", "*"):
            specificity = 0
        else:
            continue
        if best is None or specificity > best[1] or (specificity == best[1] and -position > best[2]):
            best = (q, specificity, -position)
    return best


def negotiate(format_param: str | None, accept: str | None) -> str:
    """The format (XML, JSON or HTML) for a request with ?format=FORMAT_PARAM and ACCEPT."""
    if format_param:
        if format_param not in FORMATS:
            raise NotAcceptable(f"format={format_param} is not offered; use xml, json or html")
        return FORMATS[format_param]
    if accept is None or not accept.strip():
        return XML
    ranges = _ranges(accept)
    scored = []
    for order, (media_type, fmt) in enumerate(OFFERS):
        match = _match(media_type, ranges)
        if match and match[0] > 0:
            scored.append(((match[0], match[1], match[2], -order), fmt))
    if not scored:
        raise NotAcceptable(f"cannot answer Accept: {accept}; ask for application/xml, application/json "
                            "or text/html")
    return max(scored)[1]
