"""The EC2 endpoint of the API process (/ec2): only HTTP. A request is checked with Signature
Version 4, read with EC2's query protocol, carried out by ec2.actions in a worker thread, and
answered with EC2's XML (errors too, so boto3 raises ClientError with EC2's code)."""
from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response

from condor_cloud.ec2 import actions
from condor_cloud.ec2.protocol import ProtocolError, parse_request, render_error, render_response
from condor_cloud.ec2.sigv4 import SignatureError, SignedRequest, verify
from condor_cloud.errors import CloudError, NotAllowed, NotFound, ParameterError, Unavailable

log = logging.getLogger("condor-cloud.api")
XML = "text/xml;charset=UTF-8"
STATUS = {"AuthFailure": 401, "SignatureDoesNotMatch": 403, "DryRunOperation": 412, "Unavailable": 503,
          "InternalError": 500}
CORE_CODES = [(ParameterError, "InvalidParameterValue"), (NotFound, "InvalidParameterValue"),
              (NotAllowed, "IncorrectInstanceState"), (Unavailable, "Unavailable")]


def signed_request(request: Request, body: bytes) -> SignedRequest:
    """REQUEST as its client signed it: the URL it addressed (raw path and query), its headers."""
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    url = f"{request.url.scheme}://{request.headers.get('host', '')}{raw_path.decode('latin-1')}"
    if query:
        url += "?" + query.decode("latin-1")
    return SignedRequest(request.method, url, {k.lower(): v for k, v in request.headers.items()}, body)


def fields_of(request: Request, body: bytes) -> dict[str, str]:
    """The request's parameters: its query string, then its form body."""
    try:
        pairs = parse_qsl(request.url.query, keep_blank_values=True) + \
            parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("InvalidParameterValue", "the body is not a form (application/x-www-form-urlencoded, "
                                                     "UTF-8) of EC2 query parameters") from None
    return dict(pairs)


class Ec2Endpoint(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        return await self.answer(request)

    async def post(self, request: Request) -> Response:
        return await self.answer(request)

    async def answer(self, request: Request) -> Response:
        from condor_cloud.api.app import run  # the API's worker threads (that module imports this one)
        request_id = str(uuid.uuid4())
        body = await request.body()
        action = ""
        try:
            key_id = verify(signed_request(request, body), self.secret_of(request), actions.REGION,
                            datetime.datetime.now(datetime.UTC))
            user, _ = request.app.state.credentials.access_key(key_id)
            action, params = parse_request(fields_of(request, body))
            data = await run(request, actions.perform, request.app.state.cloud, user, action, params,
                             files=action in actions.FILES, changes=action not in actions.READS)
            if action not in actions.READS:
                log.info("ec2: %s %s", user.name, action)
            return Response(render_response(action, data, request_id), media_type=XML)
        except (SignatureError, ProtocolError) as e:
            code, message = e.code, str(e)
            if isinstance(e, SignatureError):
                log.warning("ec2: refused a request from %s: %s",
                            request.client.host if request.client else "?", message)
        except CloudError as e:
            code = next((c for kind, c in CORE_CODES if isinstance(e, kind)), "InternalError")
            message = str(e)
            if code == "InternalError":
                log.error("ec2 %s: %s", action, e)
        return Response(render_error(code, message, request_id), STATUS.get(code, 400), media_type=XML)

    @staticmethod
    def secret_of(request: Request) -> Callable[[str], str | None]:
        def secret(key_id: str) -> str | None:
            found = request.app.state.credentials.access_key(key_id)
            return found[1] if found else None
        return secret
