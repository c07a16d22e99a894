"""What a mechanistic case hands a report to draw: one frozen spec per picture, round-tripping JSON.

A case puts its grids in `CaseResult.details["figures"]` as the `to_json()` of these specs (told
apart by "kind": heatmap, line, scatter, attention). The PNG report (`seqprobe.records.plots`) and
the HTML report (`seqprobe.records.html_figures`) draw the same specs; `FigureSpec.from_json`
validates a dict and says which field is wrong. A value that was not measured is NaN in a spec
and `null` in its JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar

__all__ = ["AttentionHead", "AttentionSpec", "FigureSpec", "HeatmapSpec", "LineSpec", "ScatterSpec"]


@dataclass(frozen=True, kw_only=True)
class FigureSpec:
    """One picture of a case: the base of the four kinds, and the dispatcher for their JSON."""

    kind: ClassVar[str]
    # Unique within the case; becomes part of the PNG file name.
    name: str
    title: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **_lists(asdict(self))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FigureSpec:
        """Build the spec `data["kind"]` names; a ValueError says which field is wrong."""
        kinds = {spec.kind: spec for spec in (HeatmapSpec, LineSpec, ScatterSpec, AttentionSpec)}
        if not isinstance(data, Mapping):
            raise ValueError(f"a figure spec is a JSON object; found {type(data).__name__}")
        name = data.get("name", "?")
        kind = data.get("kind")
        if kind not in kinds:
            raise ValueError(f"figure {name!r}: kind={kind!r}; expected one of {sorted(kinds)}")
        spec_cls = kinds[kind]
        wanted = {f.name for f in fields(spec_cls)}
        required = {f.name for f in fields(spec_cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - data.keys())
        unknown = sorted(data.keys() - wanted - {"kind"})
        if missing or unknown:
            raise ValueError(
                f"figure {name!r} ({kind}): missing fields {missing}, unknown fields {unknown}; "
                f"a {kind} figure has {sorted(wanted)}"
            )
        return spec_cls._from_fields({key: data[key] for key in wanted if key in data})

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> FigureSpec:
        """Each kind turns its JSON lists into the tuples and floats it holds."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class HeatmapSpec(FigureSpec):
    """A grid of signed values, rows × cols, e.g. recovery per layer × position."""

    kind: ClassVar[str] = "heatmap"
    values: tuple[tuple[float, ...], ...]
    row_labels: tuple[str, ...]
    col_labels: tuple[str, ...]
    x_label: str
    y_label: str
    colorbar_label: str = ""

    def __post_init__(self) -> None:
        rows, cols = len(self.row_labels), len(self.col_labels)
        if len(self.values) != rows or any(len(row) != cols for row in self.values):
            shape = f"{len(self.values)} × {[len(row) for row in self.values]}"
            raise ValueError(
                f"figure {self.name!r} (heatmap): values are {shape}, labels say {rows} × {cols}; "
                "give one row per row label and one value per column label"
            )

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> HeatmapSpec:
        grid = tuple(tuple(_number(v) for v in row) for row in data["values"])
        return cls(**_tuples(data) | {"values": grid})


@dataclass(frozen=True, kw_only=True)
class LineSpec(FigureSpec):
    """One value per x label, e.g. the logit lens across layers, with an optional interval per value."""

    kind: ClassVar[str] = "line"
    x_labels: tuple[str, ...]
    values: tuple[float, ...]
    x_label: str
    y_label: str
    # Each value's interval (e.g. a bootstrap over pairs), drawn as error bars; both or neither,
    # one bound per value, NaN where a value has none. Left out of the JSON when empty.
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.values) != len(self.x_labels):
            raise ValueError(
                f"figure {self.name!r} (line): {len(self.values)} values for "
                f"{len(self.x_labels)} x labels; give one value per label"
            )
        if (self.low or self.high) and not len(self.low) == len(self.high) == len(self.values):
            raise ValueError(
                f"figure {self.name!r} (line): {len(self.low)} low and {len(self.high)} high bounds for "
                f"{len(self.values)} values; give both, one of each per value (NaN where a value has none)"
            )

    @property
    def has_intervals(self) -> bool:
        return bool(self.low)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        return data if self.has_intervals else {k: v for k, v in data.items() if k not in ("low", "high")}

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> LineSpec:
        numbers = {key: tuple(_number(v) for v in data[key]) for key in ("values", "low", "high") if key in data}
        return cls(**_tuples(data) | numbers)


@dataclass(frozen=True, kw_only=True)
class ScatterSpec(FigureSpec):
    """One labelled point per head, e.g. output patching (y) against value patching (x)."""

    kind: ClassVar[str] = "scatter"
    x: tuple[float, ...]
    y: tuple[float, ...]
    point_labels: tuple[str, ...]
    x_label: str
    y_label: str

    def __post_init__(self) -> None:
        if not len(self.x) == len(self.y) == len(self.point_labels):
            raise ValueError(
                f"figure {self.name!r} (scatter): {len(self.x)} x, {len(self.y)} y and "
                f"{len(self.point_labels)} point labels; give one of each per point"
            )

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> ScatterSpec:
        x, y = (tuple(_number(v) for v in data[axis]) for axis in ("x", "y"))
        return cls(**_tuples(data) | {"x": x, "y": y})


@dataclass(frozen=True, kw_only=True)
class AttentionHead:
    """One head's attention pattern: row i is how query position i spreads over key positions."""

    label: str
    pattern: tuple[tuple[float, ...], ...]


@dataclass(frozen=True, kw_only=True)
class AttentionSpec(FigureSpec):
    """The attention patterns of a few heads over the prompt's tokens."""

    kind: ClassVar[str] = "attention"
    heads: tuple[AttentionHead, ...]
    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.tokens)
        for head in self.heads:
            if len(head.pattern) != n or any(len(row) != n for row in head.pattern):
                raise ValueError(
                    f"figure {self.name!r} (attention): head {head.label!r} has a "
                    f"{len(head.pattern)}-row pattern for {n} tokens; a pattern is tokens × tokens"
                )

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> AttentionSpec:
        heads = tuple(
            AttentionHead(
                label=str(head["label"]),
                pattern=tuple(tuple(_number(v) for v in row) for row in head["pattern"]),
            )
            for head in data["heads"]
        )
        return cls(**_tuples(data) | {"heads": heads})


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _tuples(data: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists back into the tuples the frozen specs hold."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}


def _lists(value: Any) -> Any:
    """Tuples into lists and NaN into null, recursively: strict JSON that round-trips unchanged."""
    if isinstance(value, (list, tuple)):
        return [_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
