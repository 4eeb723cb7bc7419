"""scikit-learn style parameters for a pipeline of named steps: ``get_params`` / ``set_params`` with ``step__param``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any, ClassVar


class StepParams:
    """``get_params`` / ``set_params`` over the ``__init__`` parameters; ``STEPS`` name those that are steps (objects
    with parameters of their own, or dataclasses). A step given by name or path is reached once it is loaded
    (``_load_step(name)`` loads it; ``get_params`` never loads)."""

    STEPS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _param_names(cls) -> tuple[str, ...]:
        return tuple(n for n in inspect.signature(cls.__init__).parameters if n != "self")

    def _load_model(self, name: str, spec: str | os.PathLike) -> Any:
        """Load the step ``name`` given as ``spec`` (a name or path)."""
        raise NotImplementedError

    def _load_step(self, name: str) -> Any:
        """The step object, loading it (once) when it was given by name or path."""
        spec = getattr(self, name)
        if not isinstance(spec, str | os.PathLike):
            return spec
        cache = self.__dict__.setdefault("_loaded", {})
        if cache.get(name, (None,))[0] != spec:
            cache[name] = (spec, self._load_model(name, spec))
        return cache[name][1]

    def _step(self, name: str) -> Any:
        """The step object, without loading: an error if it was given by name or path and is not loaded yet."""
        spec = getattr(self, name)
        if not isinstance(spec, str | os.PathLike):
            return spec
        loaded = self.__dict__.get("_loaded", {}).get(name)
        if loaded is None or loaded[0] != spec:
            raise AttributeError(f"the {name} {os.fspath(spec)!r} is not loaded yet: call load() first")
        return loaded[1]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = {name: getattr(self, name) for name in self._param_names()}
        if deep:
            loaded = self.__dict__.get("_loaded", {})
            for step in self.STEPS:
                value = params[step]
                if isinstance(value, str | os.PathLike):  # nested parameters once loaded; never load here
                    value = loaded.get(step, (None, None))[1]
                if dataclasses.is_dataclass(value):
                    params.update({f"{step}__{k}": v for k, v in dataclasses.asdict(value).items()})
                elif hasattr(value, "get_params"):
                    params.update({f"{step}__{k}": v for k, v in value.get_params(deep=False).items()})
        return params

    def set_params(self, **params: Any) -> Any:
        """Set parameters; ``step__param`` reaches into a step (e.g. ``crop_policy__pad=0.2``), loading a step given
        by name or path first."""
        valid = self._param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            step, _, sub = key.partition("__")
            if step not in valid:
                raise ValueError(f"invalid parameter {step!r}; valid: {', '.join(valid)}")
            if sub:
                nested.setdefault(step, {})[sub] = value
            else:
                setattr(self, step, value)
        for step, values in nested.items():
            current = self._load_step(step)
            if current is None:
                raise ValueError(f"cannot set {step}__... while {step} is None")
            if dataclasses.is_dataclass(current):
                setattr(self, step, dataclasses.replace(current, **values))
            elif hasattr(current, "set_params"):
                current.set_params(**values)
            else:
                for name, value in values.items():
                    if not hasattr(current, name):
                        raise ValueError(f"{type(current).__name__} has no parameter {name!r}")
                    setattr(current, name, value)
        return self
