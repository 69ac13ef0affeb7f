"""The base of every API model: metal3's camelCase wire names, unknown keys refused."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Base: camelCase aliases (metal3's wire names), either name accepted, unknown keys kept out."""

    model_config = ConfigDict(
        populate_by_name=True,
        extra="forbid",
        alias_generator=lambda name: re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name),
        use_enum_values=False,
    )
