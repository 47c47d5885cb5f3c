"""A Jinja sandbox with a budget: chat templates are untrusted and render on the engine thread.

The immutable sandbox already blocks Python internals (``__class__``, ``__subclasses__``)
and mutation. On top of it a render gets a budget of operations and of time, checked at
every call, attribute or item lookup, operator, filter, loop iteration and concatenation;
operations that build huge values in one step (``'x' * 10**9``, ``center(10**9)``,
``'%999999999d' % 1``) are refused before they run. A template that exceeds the budget
fails that request with :class:`TemplateError`; the engine serves on.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from backends.base import TemplateError

MAX_OPERATIONS = 1_000_000
MAX_SECONDS = 2.0
MAX_CHARS = 4_000_000
# Larger integers than this never belong in a chat template's arguments (widths, counts).
MAX_INT_ARGUMENT = 1_000_000
_HUGE_WIDTH = re.compile(r"\d{7,}")
_ITER = "__hearth_iter"
_CONCAT = "__hearth_concat"


class Budget:
    """Operations and time left to one render."""

    def __init__(self, operations: int = MAX_OPERATIONS, seconds: float = MAX_SECONDS) -> None:
        self.left = operations
        self.end = time.monotonic() + seconds

    def tick(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise TemplateError(f"chat template: more than {MAX_OPERATIONS} operations")
        if self.left % 256 == 0 and time.monotonic() > self.end:
            raise TemplateError(f"chat template: rendering took more than {MAX_SECONDS:g} s")


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox; every render runs under :meth:`budget`'s current Budget."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._local = threading.local()
        self.globals[_ITER] = self._iterate
        self.globals[_CONCAT] = self._concat
        self.filters = {name: self._counted(f, name) for name, f in self.filters.items()}

    def add_filter(self, name: str, fn: Callable[..., Any]) -> None:
        self.filters[name] = self._counted(fn, name)

    def compile_source(self, source: str) -> Any:
        """Parse and rewrite loops and ``~`` so that they count against the budget."""
        return self.from_string(_Rewrite().visit(self.parse(source)))

    def render(self, generate: Callable[[], Iterator[str]], budget: Budget) -> str:
        """Run a template's ``generate`` under ``budget``; the output is capped too."""
        self._local.budget = budget
        try:
            parts, size = [], 0
            for part in generate():
                budget.tick()
                size += len(part)
                if size > MAX_CHARS:
                    raise TemplateError("chat template output exceeds the size limit")
                parts.append(part)
            return "".join(parts)
        finally:
            self._local.budget = None

    def _tick(self) -> None:
        budget: Budget | None = getattr(self._local, "budget", None)
        if budget is not None:
            budget.tick()

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        self._tick()
        _check_arguments(args, kwargs)
        method = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
        if getattr(method, "__name__", "") in ("format", "format_map"):
            _check_format(getattr(method, "__self__", None))
        return super().call(context, obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self._tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self._tick()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self._tick()
        if operator == "**":
            _check_arguments((right,), {})
            if isinstance(right, int) and right > 1024:
                raise TemplateError("chat template: an exponent over 1024")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int):
                    _check_size(len(seq) * count)
        elif operator == "+" and isinstance(left, str | list | tuple):
            _check_size(len(left) + len(right) if hasattr(right, "__len__") else 0)
        elif operator == "%":
            _check_format(left)
            _check_arguments(right if isinstance(right, tuple) else (right,), {})
        return super().call_binop(context, operator, left, right)

    def _iterate(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self._tick()
            yield item

    def _concat(self, *parts: Any) -> str:
        text = "".join(map(str, parts))
        _check_size(len(text))
        return text

    def _counted(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        @functools.wraps(fn)  # keeps jinja's pass_context / pass_environment marks
        def counted(*args: Any, **kwargs: Any) -> Any:
            self._tick()
            _check_arguments(args, kwargs)
            if name == "format":
                _check_format(next((a for a in args if isinstance(a, str)), None))
            return fn(*args, **kwargs)

        return counted


class _Rewrite(NodeTransformer):
    """``for x in y`` → ``for x in __hearth_iter(y)``; ``a ~ b`` → ``__hearth_concat(a, b)``."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Call(nodes.Name(_ITER, "load"), [node.iter], [], None, None)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(nodes.Name(_CONCAT, "load"), list(node.nodes), [], None, None)


def _check_arguments(args: Iterable[Any], kwargs: dict[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
            raise TemplateError(f"chat template: an argument over {MAX_INT_ARGUMENT}")


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _HUGE_WIDTH.search(text):
        raise TemplateError("chat template: a format width over the limit")


def _check_size(size: int) -> None:
    if size > MAX_CHARS:
        raise TemplateError("chat template: a value over the size limit")
