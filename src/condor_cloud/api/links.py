"""Absolute URLs of the API's resources, as Deltacloud writes them."""
from __future__ import annotations


class Links:
    def __init__(self, api: str):
        self.api = api.rstrip("/")

    def __call__(self, *parts: str) -> str:
        return "/".join([self.api, *parts])

    def action(self, instance_id: str, action: str) -> str:
        return self("instances", instance_id) if action == "destroy" else self("instances", instance_id, action)

    def volume(self, volume_id: str) -> str:
        return self("storage_volumes", volume_id)
