"""Small performance helpers shared by the bulk paths (aggregation, judging, releases)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a bulk loop.

    Loops over hundreds of thousands of records make millions of small acyclic objects;
    each burst triggers a collection that walks everything the caller holds (3-4x the
    loop's own time at 100k clips). None of these objects form cycles, so nothing is lost
    by collecting once afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def trusted_maker(cls: type, given: tuple[str, ...], complete: bool = False) -> Callable[[dict], Any] | None:
    """A function making a `cls` record from a dict with exactly the fields `given`, holding what
    validation would make of them (a bulk path's own values: str, int, float, bool, None, tuples
    of records), without validating again: what `cls.model_construct(**values)` makes, and what
    the validator makes of such values (__dict__ in field order with the defaults of the fields
    not given, `given` as the fields set). None where validation could change a value (validators,
    aliases, post-init, extra fields, a default factory or a required field not given).
    `complete`: the dicts hold every field in field order, the defaults of those not `given`
    included: they become the records' __dict__ as they are."""
    decorators = cls.__pydantic_decorators__
    fields = cls.model_fields
    if (cls.__pydantic_post_init__ or cls.__pydantic_root_model__ or cls.model_config.get("extra") == "allow"
            or decorators.validators or decorators.field_validators or decorators.root_validators
            or decorators.model_validators or set(given) - set(fields)
            or any(f.alias is not None or f.validation_alias is not None for f in fields.values())
            or any(name not in given and (f.is_required() or f.default_factory is not None)
                   for name, f in fields.items())):
        return None
    template = {name: None if name in given else f.default for name, f in fields.items()}
    # one fields set for all the records, as model_construct(_fields_set=...) does with the set it is given
    # (the records are frozen: nothing adds to it; model_copy copies it)
    fields_set = set(given)
    new = cls.__new__
    set_attribute = object.__setattr__
    complete = complete or tuple(given) == tuple(fields)

    def make(values: dict) -> Any:
        record = new(cls)
        if complete:  # every field, in field order: the dict itself
            data = values
        else:
            data = template.copy()
            data.update(values)
        set_attribute(record, "__dict__", data)
        set_attribute(record, "__pydantic_fields_set__", fields_set)
        set_attribute(record, "__pydantic_extra__", None)
        set_attribute(record, "__pydantic_private__", None)
        return record

    return make
