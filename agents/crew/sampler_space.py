"""A hyperparameter sampler's search space: train.py's tunable constants, each measured in the offline policy's grid.

Every knob the offline policy can tune (searchspace.py) becomes one dimension, in grid units away from its value
when the study started (its origin): learning rates and scales in quarter-octaves, betas in quarter-octaves of
1 - beta, ratios in steps of 0.05, integers by 1, powers of two by doublings (policy.STEPS). So one unit means about
the same for every constant, log scales come for free, and the origin is 0 on every axis. The box is the policy's
own reach: `near` its longest local step, `wide` its widest step, both inside its outer bounds (policy.grid_bounds)
and always holding the origin.

A point (units per dimension) becomes values written into train.py, rounded to what a person would write (three
significant digits for scales). This module knows nothing of Optuna: hpo.py turns dimensions into distributions.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from agents.crew.policy import STEPS, grid_bounds, grid_units
from agents.crew.searchspace import SearchSpace

BOXES = {"near": 1, "wide": 2}  # index into policy.STEPS[kind]: (first step, longest local step, widest step)
WHOLE_STEPS = ("int", "pow2")


@dataclass(frozen=True)
class Dimension:
    """One constant of train.py as an axis: grid units from `origin`, within [low, high] (low <= 0 <= high)."""

    name: str  # the knob: "MATRIX_LR", or "ADAM_BETAS[1]"
    kind: str  # a key of policy.STEPS
    origin: float | int
    low: float
    high: float

    @property
    def integer(self) -> bool:
        return self.kind in WHOLE_STEPS

    def value(self, units: float) -> float | int:
        """The constant's value `units` grid steps away from the origin, rounded as a person would write it."""
        o = self.origin
        if self.kind == "log":
            return _significant(o * 2 ** (units / 4))
        if self.kind == "linear":
            return round(o + 0.05 * units, 3)
        if self.kind == "beta":
            return round(1 - _significant((1 - o) * 2 ** (-units / 4)), 6)
        if self.kind == "int":
            return int(o) + int(round(units))
        return int(o * 2 ** int(round(units)))

    def units(self, value: float) -> float:
        """Where `value` lies on this axis (the inverse of `value`, before rounding)."""
        return grid_units(self.kind, float(self.origin), float(value))


@dataclass(frozen=True)
class SamplerSpace:
    """The dimensions of one study, fixed when it starts: the same space for every trial of the study."""

    dimensions: tuple[Dimension, ...]

    @classmethod
    def around(cls, space: SearchSpace, box: str = "near") -> SamplerSpace:
        """Every knob of train.py as it is now, boxed around its current value."""
        if box not in BOXES:
            raise ValueError(f"box must be one of {', '.join(BOXES)}, not {box!r}")
        dimensions = []
        for knob in space.knobs.values():
            origin = knob.value
            reach = STEPS[knob.kind][BOXES[box]]
            lowest, highest = grid_bounds(knob, float(origin))
            low = max(-reach, _units_or(knob.kind, origin, lowest, -reach))
            high = min(reach, _units_or(knob.kind, origin, highest, reach))
            low, high = min(low, 0.0), max(high, 0.0)  # the value it has now ran fine: always inside the box
            if knob.kind in WHOLE_STEPS:
                low, high = float(math.ceil(low - 1e-9)), float(math.floor(high + 1e-9))
            if high - low > 1e-9:  # an axis with one point has nothing to tune
                dimensions.append(Dimension(knob.name, knob.kind, origin, float(round(low, 6)), float(round(high, 6))))
        return cls(tuple(dimensions))

    def values(self, point: dict[str, float]) -> dict[str, float | int]:
        """The constants' values at a point (units per dimension name; a dimension left out stays at its origin)."""
        return {d.name: d.value(point.get(d.name, 0.0)) for d in self.dimensions}

    def point(self, values: dict[str, float | int]) -> dict[str, float] | None:
        """The point of a train.py's constants in this space; None when one lies outside the box or is missing."""
        point = {}
        for d in self.dimensions:
            if d.name not in values:
                return None
            try:
                units = d.units(values[d.name])
            except (ValueError, ZeroDivisionError):
                return None
            if not d.low - 1e-6 <= units <= d.high + 1e-6:
                return None
            point[d.name] = round(units) if d.integer else min(max(units, d.low), d.high)
        return point

    def to_json(self) -> str:
        return json.dumps([asdict(d) for d in self.dimensions])

    @classmethod
    def from_json(cls, text: str) -> SamplerSpace:
        return cls(tuple(Dimension(**d) for d in json.loads(text)))


def _significant(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}")


def _units_or(kind: str, origin: float, bound: float, fallback: float) -> float:
    try:
        return grid_units(kind, float(origin), float(bound))
    except (ValueError, ZeroDivisionError):  # e.g. a log knob at 0: no bound in units
        return fallback
