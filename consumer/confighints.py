""" "Did you mean": the known field closest to an unknown one, found by walking the models along
the error's location (a typo like `secret_evn` or `max_concurency` names its fix)."""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel


def closest_field(root: type[BaseModel], loc: Sequence[int | str]) -> str | None:
    """The known field name nearest to loc[-1] in the model that holds it, or None."""
    if not loc or not isinstance(loc[-1], str):
        return None
    model = _model_at(root, loc[:-1])
    if model is None:
        return None
    found = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
    return found[0] if found else None


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    current: Any = root
    for part in loc:
        current = _step(current, part)
        if current is None:
            return None
    models = [t for t in _alternatives(current) if _is_model(t)]
    return models[0] if len(models) == 1 else None


def _step(annotation: Any, part: int | str) -> Any:
    for option in _alternatives(annotation):
        origin = get_origin(option)
        if isinstance(part, int) and origin in (list, tuple):
            return get_args(option)[0]
        if isinstance(part, str):
            if _is_model(option) and part in option.model_fields:
                return option.model_fields[part].annotation
            if origin is dict:
                return get_args(option)[1]
            if _is_model(option) and part == option.__name__:  # a union's tag in the loc
                return option
    return None


def _alternatives(annotation: Any) -> list[Any]:
    """The types an annotation may hold: unions and Annotated unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _alternatives(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in get_args(annotation) for t in _alternatives(arg)]
    return [annotation]


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)
