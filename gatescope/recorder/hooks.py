"""Hooks on recorded quantities, chosen by selectors, called with the hook's context.

Every recorded quantity is a hook point in the sense of TransformerLens's HookPoint: during the forward,
at every step, a hook ``fn(value, hook) -> Tensor | None`` sees the value ([B, H]) and may return a
replacement, which the rest of the step and every later step, layer and output use (None keeps it).
``hook`` is the quantity's `HookContext`: ``name``, ``module``, ``path``, ``layer``, ``direction``,
``kind``, the current ``step`` (the input position t, for ``bwd`` too) and ``ctx``, a dict that lives as
long as the recording (TransformerLens's ``hook.ctx``).

``record(model, hooks=[(selector, fn), ...])`` attaches hooks; a selector is a quantity name
(``"rnn.l0.fwd.f"``), a glob (``"*.f"``, ``"rnn.l1.*"``; fnmatch, case-sensitive), a list of selectors,
or a predicate ``name -> bool``, and a selector matching nothing is an error. The older mapping form
``hooks={name: fn(value, step)}`` (a function or a list of them per exact name) keeps working.

A hook point that is itself an nn.Module (an identity module whose forward hooks captum or nnsight use)
is one more ``fn(value, hook)``: call the module on ``value`` and return what it returns; nothing else
is needed from the recorder.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Union

from torch import Tensor, nn

from gatescope.errors import GatescopeError
from gatescope.names import parse_name

Edit = Callable[[Tensor, int], "Tensor | None"]
"""``edit(value [B, H], step) -> Tensor | None``: what the engine calls at every step (and an Intervention is)."""
HookFn = Callable[[Tensor, "HookContext"], "Tensor | None"]
Selector = Union[str, Sequence["Selector"], Callable[[str], bool]]
Hooks = Union[Mapping[str, "Edit | Sequence[Edit]"], Sequence[tuple[Selector, HookFn]]]

_GLOB = set("*?[")


@dataclass(eq=False)
class HookContext:
    """One recorded quantity as a hook point: what a hook ``fn(value, hook)`` is told about the value."""

    name: str  # rnn.l1.fwd.f
    module: nn.Module  # the recurrent module computing it
    path: str  # its path in the recorded model (rnn)
    layer: int
    direction: str  # fwd | bwd
    kind: str  # f
    step: int = -1  # the input position of the value being passed (-1 outside a call)
    ctx: dict[str, Any] = field(default_factory=dict)  # the hooks' own state, kept for the recording's life

    def bind(self, fn: HookFn) -> Edit:
        """``fn(value, hook)`` as the engine's ``edit(value, step)``."""
        def edit(value: Tensor, step: int) -> Tensor | None:
            self.step = step
            return fn(value, self)

        return edit

    def __repr__(self) -> str:
        return f"HookContext({self.name!r}, step={self.step})"


def select(selector: Selector, names: Sequence[str], check: Callable[[str], None]) -> list[str]:
    """The names among ``names`` that ``selector`` chooses, in ``names`` order (a list: in its order).

    An exact name is checked by ``check`` (which says what is wrong with it); a glob, a predicate or a
    list that matches nothing is a one-line GatescopeError."""
    if isinstance(selector, str):
        if not _GLOB & set(selector):
            check(selector)
            return [selector]
        found = [n for n in names if fnmatchcase(n, selector)]
        if not found:
            raise GatescopeError(f"selector {selector!r} matches no quantity; the model has: {_listing(names)}")
        return found
    if callable(selector):
        found = [n for n in names if selector(n)]
        if not found:
            raise GatescopeError(f"the selector {getattr(selector, '__name__', selector)!s} matches no quantity; "
                                 f"the model has: {_listing(names)}")
        return found
    if isinstance(selector, Iterable):
        chosen: dict[str, None] = {}
        for part in selector:
            chosen.update(dict.fromkeys(select(part, names, check)))
        if not chosen:
            raise GatescopeError("an empty list of selectors selects no quantity")
        return list(chosen)
    raise GatescopeError(f"not a selector: {selector!r} (a name, a glob such as '*.f', a list, or a predicate)")


def edits_of(hooks: Hooks | None, names: Sequence[str], check: Callable[[str], None],
             context: Callable[[str], HookContext]) -> Iterator[tuple[str, Edit]]:
    """(quantity name, edit) for every hook, in the order given; ``context(name)`` gives a name's hook point."""
    if hooks is None:
        return
    if isinstance(hooks, Mapping):
        for name, fns in hooks.items():
            check(name)
            for fn in [fns] if callable(fns) else fns:
                if not callable(fn):
                    raise GatescopeError(f"hooks[{name!r}] is a function fn(value, step) or a list of them, not {fn!r}")
                yield name, fn
        return
    if _is_pair(hooks):  # one (selector, fn) on its own
        hooks = [hooks]
    for item in hooks:
        if not _is_pair(item):
            raise GatescopeError(f"a hook is a pair (selector, fn(value, hook)), not {item!r}")
        selector, fn = item
        for name in select(selector, names, check):
            yield name, context(name).bind(fn)


def _is_pair(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and callable(item[1]) and not _is_pair(item[0])


def context_for(name: str, module: nn.Module) -> HookContext:
    """The hook point of quantity ``name``, computed by ``module``."""
    path, layer, direction, kind = parse_name(name)
    return HookContext(name, module, path, layer, direction, kind)


def _listing(names: Sequence[str], most: int = 12) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
