"""AWS Signature Version 4, checked the way AWS checks it, with botocore's own signer.

The expected signature is computed by botocore's SigV4Auth over exactly the
headers the client signed, with the client's timestamp and credential scope;
the two are compared in constant time.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

SERVICE = "ec2"
MAX_SKEW = datetime.timedelta(minutes=15)
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})\s*$")
_DATE = "%Y%m%dT%H%M%SZ"


class SignatureError(Exception):
    """A request whose signature does not prove its sender; CODE is EC2's error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SignedRequest:
    method: str
    url: str                    # as the client addressed it: scheme://host/raw/path?raw-query
    headers: Mapping[str, str]  # names in lower case
    body: bytes


class _ExactHeaders(SigV4Auth):
    """SigV4Auth signing exactly the headers the client listed, no more, no fewer."""

    def __init__(self, credentials: Credentials, region: str, signed: list[str]):
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name in self._signed:
            headers[name] = request.headers[name]
        return headers


def verify(request: SignedRequest, secret_of: Callable[[str], str | None], region: str,
           now: datetime.datetime) -> str:
    """The access key id that signed REQUEST, or SignatureError saying why it is refused.
    SECRET_OF gives the secret of an access key id (None for unknown ones)."""
    header = request.headers.get("authorization")
    if not header:
        raise SignatureError("AuthFailure", "the request is not signed: sign it with AWS Signature Version 4 "
                                            "using your condor-cloud access key")
    match = _AUTHORIZATION.match(header)
    if not match:
        raise SignatureError("AuthFailure", "the Authorization header is not an AWS4-HMAC-SHA256 signature")
    access_key, _, scope = match["credential"].partition("/")
    date, scope_region, service, terminator = (scope.split("/") + ["", "", "", ""])[:4]
    signed = match["signed"].split(";")
    if service != SERVICE or terminator != "aws4_request":
        raise SignatureError("AuthFailure", f"the credential scope {scope!r} is not for the ec2 service")
    if scope_region != region:
        raise SignatureError("AuthFailure", f"the credential scope names region {scope_region!r}; "
                                            f"this cloud's region is {region!r}")
    if "host" not in signed or "x-amz-date" not in signed or any(h not in request.headers for h in signed):
        raise SignatureError("AuthFailure", "the signature must cover the Host and X-Amz-Date headers, "
                                            "and every signed header must be sent")
    stamp = request.headers["x-amz-date"]
    try:
        when = datetime.datetime.strptime(stamp, _DATE).replace(tzinfo=datetime.UTC)
    except ValueError:
        raise SignatureError("AuthFailure", f"X-Amz-Date {stamp!r} is not of the form YYYYMMDDTHHMMSSZ") from None
    if abs(now - when) > MAX_SKEW or not stamp.startswith(date):
        raise SignatureError("RequestExpired", f"the request was signed at {stamp}, more than 15 minutes from "
                                               "now; check the client's clock and send it again")
    body_hash = hashlib.sha256(request.body).hexdigest()
    if request.headers.get("x-amz-content-sha256", body_hash) != body_hash:
        raise SignatureError("SignatureDoesNotMatch", "X-Amz-Content-SHA256 is not the SHA-256 of the body")
    secret = secret_of(access_key)
    if secret is None:
        raise SignatureError("AuthFailure", f"no condor-cloud user has the access key {access_key}")
    aws = AWSRequest(method=request.method, url=request.url, data=request.body,
                     headers={name: request.headers[name] for name in signed})
    aws.context["timestamp"] = stamp
    signer = _ExactHeaders(Credentials(access_key, secret), region, signed)
    expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
    if not hmac.compare_digest(expected, match["signature"]):
        raise SignatureError("SignatureDoesNotMatch", "the request signature does not match: check your "
                                                      "secret access key and signing method")
    return access_key
