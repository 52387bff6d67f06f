"""EC2's query protocol, read off the service model that boto3 and the AWS CLI themselves use.

Requests arrive as form fields (``Action=RunInstances&ImageId=...&TagSpecification.1.Tag.1.Key=Name``);
responses are XML named after the same model. Both directions are derived from botocore's
model of EC2 API version 2016-11-15, so what we read is what the clients write and what we
write is what they parse.
"""
from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from functools import cache
from typing import Any

from botocore.loaders import Loader
from botocore.model import ListShape, ServiceModel, Shape, StructureShape

API_VERSION = "2016-11-15"
NAMESPACE = f"http://ec2.amazonaws.com/doc/{API_VERSION}/"


class ProtocolError(Exception):
    """A request that does not fit the model; CODE is EC2's error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@cache
def service_model() -> ServiceModel:
    return ServiceModel(Loader().load_service_model("ec2", "service-2", API_VERSION), "ec2")


def _field_name(shape: Shape, member: str) -> str:
    """The form field name of a request member (EC2 capitalises the location name)."""
    if "queryName" in shape.serialization:
        return str(shape.serialization["queryName"])
    name = shape.serialization.get("name")
    return str(name[0].upper() + name[1:]) if name else member


def _scalar(shape: Shape, raw: str, field: str) -> Any:
    try:
        if shape.type_name in ("integer", "long"):
            return int(raw)
        if shape.type_name in ("float", "double"):
            return float(raw)
    except ValueError:
        raise ProtocolError("InvalidParameterValue", f"{field} must be a number, not {raw!r}") from None
    if shape.type_name == "boolean":
        if raw.lower() not in ("true", "false"):
            raise ProtocolError("InvalidParameterValue", f"{field} must be true or false, not {raw!r}")
        return raw.lower() == "true"
    return raw


def _read(shape: Shape, fields: Mapping[str, str], prefix: str) -> Any:
    if isinstance(shape, StructureShape):
        out = {}
        for member, member_shape in shape.members.items():
            name = _field_name(member_shape, member)
            value = _read(member_shape, fields, f"{prefix}.{name}" if prefix else name)
            if value is not None:
                out[member] = value
        return out or None
    if isinstance(shape, ListShape):
        items: list[Any] = []
        while (item := _read(shape.member, fields, f"{prefix}.{len(items) + 1}")) is not None:
            items.append(item)
        return items or ([] if prefix in fields else None)
    raw = fields.get(prefix)
    return None if raw is None else _scalar(shape, raw, prefix)


def parse_request(fields: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """(action, parameters as boto3 names them) of a request's form fields."""
    action = fields.get("Action", "")
    model = service_model()
    if action not in model.operation_names:
        raise ProtocolError("InvalidAction", f"the action {action or '(none)'} is not valid for this web service")
    input_shape = model.operation_model(action).input_shape
    params = (_read(input_shape, fields, "") if input_shape is not None else None) or {}
    return action, params


def _text(shape: Shape, value: Any) -> str:
    if shape.type_name == "boolean":
        return "true" if value else "false"
    if shape.type_name == "timestamp":
        when = value if isinstance(value, datetime.datetime) else datetime.datetime.fromtimestamp(value, datetime.UTC)
        return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return str(value)


def _write(parent: ET.Element, tag: str, shape: Shape, value: Any) -> None:
    el = ET.SubElement(parent, tag)
    if isinstance(shape, StructureShape):
        unknown = set(value) - set(shape.members)
        if unknown:
            raise KeyError(f"{shape.name} has no member {', '.join(sorted(unknown))}")
        for member, member_value in value.items():
            if member_value is not None:
                member_shape = shape.members[member]
                _write(el, member_shape.serialization.get("name", member), member_shape, member_value)
    elif isinstance(shape, ListShape):
        for item in value:
            _write(el, shape.member.serialization.get("name", "member"), shape.member, item)
    else:
        el.text = _text(shape, value)


def render_response(action: str, data: Mapping[str, Any], request_id: str) -> bytes:
    """The XML answer to ACTION carrying DATA (keyed as boto3 returns it)."""
    output_shape = service_model().operation_model(action).output_shape
    root = ET.Element(f"{action}Response", xmlns=NAMESPACE)
    ET.SubElement(root, "requestId").text = request_id
    if output_shape is not None:
        scratch = ET.Element("scratch")
        _write(scratch, "x", output_shape, data)
        root.extend(list(scratch[0]))
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def render_error(code: str, message: str, request_id: str) -> bytes:
    root = ET.Element("Response")
    error = ET.SubElement(ET.SubElement(root, "Errors"), "Error")
    ET.SubElement(error, "Code").text = code
    ET.SubElement(error, "Message").text = message
    ET.SubElement(root, "RequestID").text = request_id
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)
