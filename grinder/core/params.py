"""Parameters by name for compiled code: one declaration gives the float64 vector and the index of each slot.

A kernel reads its parameters from a float64 vector (numba compiles flat arrays, not models). The
vector's layout is the model's field order, declared once: `ParamVector.as_array` lists the fields
in that order, and `Model.index()` is a NamedTuple of their slots, so a kernel reads
`params[P.levels]` with `P = Model.index()` at module level. numba freezes a global tuple into a
constant, so a read by name compiles to what a literal index did; moving a field moves its slot and
its index together. Fields that are not numbers for the kernel (a file name, a label) are listed in
the class's `vector_exclude`.

Keep the model and the compiled code that reads it in one file: numba's on-disk cache is keyed by
the source file of the compiled function, so a layout changed in another file would not recompile it.
"""

from __future__ import annotations

from collections import namedtuple
from typing import ClassVar

import numpy as np
from pydantic import BaseModel


class ParamVector(BaseModel):
    """A pydantic model whose numeric fields, in declaration order, are the vector a compiled function reads."""

    vector_exclude: ClassVar[tuple[str, ...]] = ()  # fields kept out of the vector

    @classmethod
    def vector_fields(cls) -> tuple[str, ...]:
        """The fields in the vector, in slot order."""
        return tuple(f for f in cls.model_fields if f not in cls.vector_exclude)

    @classmethod
    def index(cls):
        """A NamedTuple of each vector field's slot (0, 1, ...), for compiled code to read by name."""
        fields = cls.vector_fields()
        return namedtuple(f"{cls.__name__}Index", fields)(*range(len(fields)))

    def as_array(self) -> np.ndarray:
        """The float64 vector (booleans as 0/1), in `vector_fields` order."""
        return np.array([float(getattr(self, f)) for f in self.vector_fields()], np.float64)
