"""A tiny declarative XML model: dataclass fields bound to paths.

Each field names where its value lives relative to the object's element:
``"name"`` (an element's text), ``"source/@bridge"`` (an attribute) or
``"features/acpi"`` with a ``bool`` field (present or absent). Fields bound
with :func:`children` hold lists of other models. The same declaration
formats and parses, so a model round-trips.
"""
from __future__ import annotations

import dataclasses
import types
import typing
import xml.etree.ElementTree as ET
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="XMLModel")


def xml(path: str, default: Any = None) -> Any:
    return dataclasses.field(default=default, metadata={"xml": path})


def children(path: str, *models: type[XMLModel]) -> Any:
    return dataclasses.field(
        default_factory=list, metadata={"xml": path, "children": models})


def _find_or_make(elem: ET.Element, steps: list[str]) -> ET.Element:
    for step in steps:
        child = elem.find(step)
        elem = child if child is not None else ET.SubElement(elem, step)
    return elem


def _split(path: str) -> tuple[list[str], str | None]:
    """'a/b/@c' -> (['a', 'b'], 'c'); 'a/b' -> (['a', 'b'], None)."""
    steps = [s for s in path.split("/") if s]
    if steps and steps[-1].startswith("@"):
        return steps[:-1], steps[-1][1:]
    return steps, None


def _field_types(cls: type) -> dict[str, type]:
    """Each field's type, with ``X | None`` reduced to ``X``."""
    out = {}
    for name, kind in typing.get_type_hints(cls).items():
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        out[name] = kind
    return out


class XMLModel:
    TAG: ClassVar[str]

    def to_element(self) -> ET.Element:
        root = ET.Element(self.TAG)
        hints = _field_types(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            path = f.metadata.get("xml")
            value = getattr(self, f.name)
            if path is None or value is None or value is False:
                continue
            steps, attr = _split(path)
            if "children" in f.metadata:
                parent = _find_or_make(root, steps)
                parent.extend(child.to_element() for child in value)
            elif hints[f.name] is bool:
                _find_or_make(root, steps)
            elif attr is not None:
                _find_or_make(root, steps).set(attr, str(value))
            else:
                _find_or_make(root, steps).text = str(value)
        return root

    def to_xml(self) -> str:
        elem = self.to_element()
        ET.indent(elem)
        return ET.tostring(elem, encoding="unicode")

    @classmethod
    def from_element(cls: type[T], elem: ET.Element) -> T:
        if elem.tag != cls.TAG:
            raise ValueError(f"expected <{cls.TAG}>, got <{elem.tag}>")
        hints = _field_types(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            path = f.metadata.get("xml")
            if path is None:
                continue
            steps, attr = _split(path)
            target = elem.find("/".join(steps)) if steps else elem
            kind = hints[f.name]
            if "children" in f.metadata:
                by_tag = {m.TAG: m for m in f.metadata["children"]}
                values[f.name] = [
                    by_tag[c.tag].from_element(c) for c in (target if target is not None else [])
                    if c.tag in by_tag]
            elif kind is bool:
                values[f.name] = target is not None
            elif target is not None:
                raw = target.get(attr) if attr is not None else target.text
                if raw is not None:
                    values[f.name] = int(raw) if kind is int else raw
        return cls(**values)

    @classmethod
    def from_xml(cls: type[T], text: str) -> T:
        return cls.from_element(ET.fromstring(text))
