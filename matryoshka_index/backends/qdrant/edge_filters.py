"""qdrant-client filters (``models.Filter`` or its dict form) translated to qdrant-edge's own ``Filter``.

The two packages describe the same Qdrant filter language with different classes; the qdrant-edge
backend takes either, so code written for a Qdrant server (or for ``backend="qdrant"``, which
becomes qdrant-edge when the extra is installed) filters the same way embedded. A dict is read as
qdrant-client reads it (``models.Filter.model_validate``). A condition qdrant-edge cannot express
gets one line naming it.
"""

from __future__ import annotations

from typing import Any

import qdrant_edge as qe
from pydantic import ValidationError
from qdrant_client import models as qm

from ...errors import InputError
from .common import first_line


def to_edge_filter(query_filter: Any) -> Any:
    """``query_filter`` as a ``qdrant_edge.Filter`` (None stays None; an edge Filter is returned as is)."""
    if query_filter is None or isinstance(query_filter, qe.Filter):
        return query_filter
    if isinstance(query_filter, dict):
        try:
            query_filter = qm.Filter.model_validate(query_filter)
        except ValidationError as exc:
            raise InputError(f"query_filter: not a Qdrant filter ({first_line(exc)})") from None
    if not isinstance(query_filter, qm.Filter):
        raise InputError(
            "query_filter: the qdrant-edge backend takes a qdrant_edge.Filter, a qdrant_client.models.Filter or its "
            f"dict form, got {type(query_filter).__name__}"
        )
    return _filter(query_filter)


def _listed(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return [_condition(c) for c in (value if isinstance(value, list) else [value])]


def _filter(f: qm.Filter) -> Any:
    min_should = None
    if f.min_should is not None:
        min_should = qe.MinShould(_listed(f.min_should.conditions), f.min_should.min_count)
    return qe.Filter(
        must=_listed(f.must), should=_listed(f.should), must_not=_listed(f.must_not), min_should=min_should
    )


def _condition(c: Any) -> Any:
    if isinstance(c, qm.Filter):
        return _filter(c)
    if isinstance(c, qm.FieldCondition):
        return _field(c)
    if isinstance(c, qm.HasIdCondition):
        return qe.HasIdCondition({str(i) if not isinstance(i, int) else i for i in c.has_id})
    if isinstance(c, qm.IsEmptyCondition):
        return qe.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, qm.IsNullCondition):
        return qe.IsNullCondition(c.is_null.key)
    if isinstance(c, qm.HasVectorCondition):
        return qe.HasVectorCondition(c.has_vector)
    if isinstance(c, qm.NestedCondition):
        return qe.NestedCondition(c.nested.key, _filter(c.nested.filter))
    raise InputError(f"query_filter: the qdrant-edge backend cannot express a {type(c).__name__}")


_MATCHES = (
    (qm.MatchValue, lambda m: qe.MatchValue(m.value)),
    (qm.MatchAny, lambda m: qe.MatchAny(list(m.any))),
    (qm.MatchExcept, lambda m: qe.MatchExcept(list(m.except_))),
    (qm.MatchText, lambda m: qe.MatchText(m.text)),
    (qm.MatchTextAny, lambda m: qe.MatchTextAny(m.text_any)),
    (qm.MatchPhrase, lambda m: qe.MatchPhrase(m.phrase)),
)


def _point(p: qm.GeoPoint) -> Any:
    return qe.GeoPoint(lon=p.lon, lat=p.lat)


def _field(c: qm.FieldCondition) -> Any:
    kwargs: dict[str, Any] = {}
    if c.match is not None:
        for cls, make in _MATCHES:
            if isinstance(c.match, cls):
                kwargs["match"] = make(c.match)
                break
        else:
            raise InputError(f"query_filter: the qdrant-edge backend cannot express a {type(c.match).__name__}")
    if c.range is not None:
        bounds = {k: getattr(c.range, k) for k in ("gte", "gt", "lte", "lt")}
        if isinstance(c.range, qm.DatetimeRange):
            kwargs["range"] = qe.RangeDateTime(**{k: None if v is None else str(v) for k, v in bounds.items()})
        else:
            kwargs["range"] = qe.RangeFloat(**bounds)
    if c.geo_radius is not None:
        kwargs["geo_radius"] = qe.GeoRadius(center=_point(c.geo_radius.center), radius=c.geo_radius.radius)
    if c.geo_bounding_box is not None:
        box = c.geo_bounding_box
        kwargs["geo_bounding_box"] = qe.GeoBoundingBox(
            top_left=_point(box.top_left), bottom_right=_point(box.bottom_right)
        )
    if c.values_count is not None:
        vc = c.values_count
        kwargs["values_count"] = qe.ValuesCount(lt=vc.lt, gt=vc.gt, lte=vc.lte, gte=vc.gte)
    for name in ("geo_polygon",):
        if getattr(c, name, None) is not None:
            raise InputError(f"query_filter: the qdrant-edge backend does not translate {name} conditions yet")
    return qe.FieldCondition(key=c.key, **kwargs)


__all__ = ["to_edge_filter"]
