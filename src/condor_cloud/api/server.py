"""condor-cloud-api: serve the Deltacloud API (uvicorn) with settings from the condor config."""
from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from condor_cloud.api.app import create_app
from condor_cloud.api.auth import Credentials
from condor_cloud.cloud import Cloud
from condor_cloud.errors import CloudError
from condor_cloud.profiles import parse_profiles
from condor_cloud.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="condor-cloud-api", description=__doc__)
    parser.add_argument("--address", help="listen address (CONDOR_CLOUD_API_ADDRESS)")
    parser.add_argument("--port", type=int, help="listen port (CONDOR_CLOUD_API_PORT)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="condor-cloud-api: %(message)s")
    try:
        settings = Settings.from_condor()
        credentials = Credentials.load(settings.api_credentials)
        profiles = parse_profiles(settings.hardware_profiles)
    except CloudError as e:
        logging.getLogger("condor-cloud.api").error("%s", e)
        return 2
    import htcondor2
    cloud = Cloud(settings, profiles, htcondor2.Schedd)
    uvicorn.run(create_app(cloud, credentials), host=args.address or settings.api_address,
                port=args.port or settings.api_port, log_level="info", proxy_headers=False, server_header=False,
                h11_max_incomplete_event_size=16 * 1024)
    return 0
