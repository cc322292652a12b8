"""Forward hooks as context managers, in the style of baukit's ``nethook``.

    with Trace(model, "model.layers.5.mlp.down_proj", retain_input=True) as t:
        model(**batch)
    keys = t.input                                   # (B, T, d_in)

Every option is explicit and off by default except ``retain_output``. Hooks are removed in
``__exit__`` (in reverse order for ``TraceDict``) whatever happens inside the block; with
``stop=True`` the forward pass is cut short after the (last) traced module by raising
``StopForward``, which the context manager swallows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from kbsync.errors import ModelError

EditFn = Callable[[Any, str], Any]  # (output, module name) -> new output


class StopForward(Exception):
    """Raised by a hook to end a forward pass early; caught by Trace/TraceDict on exit."""


def _get_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise ModelError(f"the model has no module {name!r}; check the [model] module names") from exc


def _copy(value: Any, clone: bool, detach: bool) -> Any:
    if isinstance(value, torch.Tensor):
        if detach:
            value = value.detach()
        return value.clone() if clone else value
    if isinstance(value, tuple):
        return tuple(_copy(v, clone, detach) for v in value)
    return value


def _exit_hooks(self: Any, exc_type: type | None, exc: BaseException | None, tb: Any) -> bool:
    """Remove the hooks (always) and swallow StopForward, the early end of a traced pass."""
    self.close()
    return exc_type is not None and issubclass(exc_type, StopForward)


class Trace:
    """Retain (and optionally edit) the input and output of one named module."""

    def __init__(
        self,
        model: torch.nn.Module,
        name: str,
        retain_input: bool = False,
        retain_output: bool = True,
        edit_output: EditFn | None = None,
        stop: bool = False,
        clone: bool = False,
        detach: bool = False,
    ) -> None:
        self.name = name
        self.input: Any = None  # first positional argument (or ``hidden_states``)
        self.output: Any = None  # after edit_output, as the rest of the model sees it
        self.fired = False  # the module ran since the last stop
        self.should_stop: Callable[[], bool] = lambda: stop

        def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if retain_input:
                first = args[0] if args else kwargs.get("hidden_states")
                self.input = _copy(first, clone, detach)
            if edit_output is not None:
                output = edit_output(output, name)
            if retain_output:
                self.output = _copy(output, clone, detach)
            self.fired = True
            if self.should_stop():
                raise StopForward()
            return output

        module = _get_module(model, name)
        self._handle = module.register_forward_hook(hook, with_kwargs=True)

    def __enter__(self) -> Trace:
        return self

    __exit__ = _exit_hooks

    def close(self) -> None:
        self._handle.remove()


class TraceDict(dict[str, Trace]):
    """A Trace per module name; ``stop`` ends the pass once every traced module has run."""

    def __init__(
        self,
        model: torch.nn.Module,
        names: Iterable[str],
        retain_input: bool = False,
        retain_output: bool = True,
        edit_output: EditFn | None = None,
        stop: bool = False,
        clone: bool = False,
        detach: bool = False,
    ) -> None:
        super().__init__()
        try:
            for name in dict.fromkeys(names):  # unique, in order
                trace = Trace(model, name, retain_input=retain_input, retain_output=retain_output,
                              edit_output=edit_output, clone=clone, detach=detach)
                if stop:
                    trace.should_stop = self._all_fired
                self[name] = trace
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> TraceDict:
        return self

    __exit__ = _exit_hooks

    def _all_fired(self) -> bool:
        if not all(t.fired for t in self.values()):
            return False
        for t in self.values():  # ready for the next forward pass
            t.fired = False
        return True

    def close(self) -> None:
        for trace in reversed(list(self.values())):
            trace.close()
