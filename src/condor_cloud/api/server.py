"""condor-cloud-api: serve the Deltacloud API (uvicorn) with settings from the condor config."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn

from condor_cloud.api.app import create_app
from condor_cloud.api.auth import Credentials
from condor_cloud.api.middleware import networks
from condor_cloud.cloud import Cloud
from condor_cloud.condor import PooledCollector, PooledSchedd, WorkerPool, authenticate_with_tokens
from condor_cloud.errors import CloudError
from condor_cloud.profiles import parse_profiles
from condor_cloud.queue_service import QueueClient
from condor_cloud.settings import Settings

log = logging.getLogger("condor-cloud.api")
# Processes that talk to HTCondor for the API: as many calls at once.
CONDOR_WORKERS = 4


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def tls_options(settings: Settings, address: str) -> dict[str, Any]:
    """uvicorn's TLS options; CloudError when the configuration would send passwords in clear."""
    cert, key = settings.api_tls_certificate, settings.api_tls_key
    if bool(cert) != bool(key):
        raise CloudError("set both CONDOR_CLOUD_API_TLS_CERTIFICATE and CONDOR_CLOUD_API_TLS_KEY, or neither")
    if cert:
        for knob, path in (("CERTIFICATE", cert), ("KEY", key)):
            if not Path(path).is_file():
                raise CloudError(f"CONDOR_CLOUD_API_TLS_{knob} = {path}: no such file readable by this user")
        return {"ssl_certfile": cert, "ssl_keyfile": key}
    if not is_loopback(address) and not settings.api_allow_plain_http:
        raise CloudError(f"refusing to listen on {address} without TLS: Basic credentials would cross the "
                         "network in clear. Set CONDOR_CLOUD_API_TLS_CERTIFICATE and CONDOR_CLOUD_API_TLS_KEY, "
                         "listen on 127.0.0.1 behind a TLS proxy, or set CONDOR_CLOUD_API_ALLOW_PLAIN_HTTP = true "
                         "on a network you trust")
    return {}


def max_body(settings: Settings) -> int:
    """The largest request body: a create with the largest user_data, form-encoded (each
    base64 character at most 3 bytes), and room for the other parameters, in whole KiB."""
    return -(-(3 * settings.user_data_limit + 64 * 1024) // 1024) * 1024


def read_with_token(tokens: Path) -> None:
    """Talk to HTCondor with the token in TOKENS only, which reads the queue and the pool and
    nothing more: every change is the queue service's (queue_service.py)."""
    try:
        readable = [p for p in tokens.iterdir() if p.is_file() and os.access(p, os.R_OK)]
    except OSError as e:
        readable = []
        reason = e.strerror
    else:
        reason = "it holds no token this user can read"
    if not readable:
        raise CloudError(f"the API needs a token to read the queue in {tokens} "
                         f"(CONDOR_CLOUD_API_TOKENS), and {reason}; run `condor-cloud setup master` "
                         "as root, which makes it")
    authenticate_with_tokens(tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="condor-cloud-api", description=__doc__)
    parser.add_argument("--address", help="listen address (CONDOR_CLOUD_API_ADDRESS)")
    parser.add_argument("--port", type=int, help="listen port (CONDOR_CLOUD_API_PORT)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="condor-cloud-api: %(message)s")
    try:
        settings = Settings.from_condor()
        credentials = Credentials.load(settings.api_credentials, settings.state / "session.key")
        profiles = parse_profiles(settings.hardware_profiles)
        address = args.address or settings.api_address
        tls = tls_options(settings, address)
        networks(settings.api_forwarded_allow_ips)
        read_with_token(settings.api_tokens)
    except CloudError as e:
        log.error("%s", e)
        return 2
    pool = WorkerPool(CONDOR_WORKERS, settings.api_condor_timeout)
    schedd, collector = PooledSchedd(pool), PooledCollector(pool)
    cloud = Cloud(settings, profiles, lambda: schedd, lambda: collector,
                  writer=QueueClient(settings.queue_socket, settings.api_condor_timeout))
    app = create_app(cloud, credentials, timeout=settings.api_condor_timeout, max_body=max_body(settings),
                     forwarded_allow=settings.api_forwarded_allow_ips)
    try:
        uvicorn.run(app, host=address, port=args.port or settings.api_port, log_level="info",
                    proxy_headers=False, server_header=False, h11_max_incomplete_event_size=16 * 1024,
                    timeout_graceful_shutdown=5, **tls)
    finally:
        pool.close()
    return 0
