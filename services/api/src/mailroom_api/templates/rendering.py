"""The template sandbox: Jinja2's `SandboxedEnvironment`, tightened, with op and output budgets.

This module runs inside a render worker process (templates/worker.py), never in the API's own
process: the worker is what makes rendering *bounded* (the pool kills it after the render timeout,
and its address space is capped with RLIMIT_AS). The guards here make the common bombs fail at once
with a clear message instead of burning the timeout:

- a value the data does not have renders empty, at any depth (`{{ user.name }}` without `user`;
  `ChainableUndefined`): required variables are what makes data mandatory;
- no loader (`include`/`extends`/`import` fail), no `lipsum`; attribute access to anything
  underscored or unsafe raises (`SecurityError`) instead of rendering empty;
- `*`, `**`, `%` and `+` are intercepted: a string or list repeated past the output budget, an
  exponent past 256 (or a huge base), a `%` format with a width/precision over 10,000 are refused
  before they allocate;
- `range()` is bounded by the sandbox (100,000 items); every call (a macro, a method, a global)
  spends one unit of an op budget and checks the deadline, so recursive macros and call-heavy
  loops stop;
- output is streamed (`generate()`) and stops as soon as it passes the output budget.

A loop that neither calls nor outputs (nested `for` over data) is bounded only by the worker's
timeout. Autoescape is on for html, off for subject and text (two environments)."""

from __future__ import annotations

import operator
import re
import time
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, Undefined
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

MAX_EXPONENT = 256
MAX_FORMAT_WIDTH = 10_000
DEFAULT_MAX_CALLS = 1_000_000


class RenderError(Exception):
    """The template cannot be rendered with this data; the message is for the tenant."""


class _Budget:
    """What one render may spend: calls, output characters, wall time."""

    def __init__(self, *, max_output: int, max_calls: int, deadline: float) -> None:
        self.max_output = max_output
        self.calls_left = max_calls
        self.deadline = deadline

    def spend(self) -> None:
        self.calls_left -= 1
        if self.calls_left < 0:
            raise RenderError("the template makes too many calls (a recursive macro or a loop that never ends?)")
        if time.monotonic() > self.deadline:
            raise RenderError("rendering the template took too long")


_NO_BUDGET = _Budget(max_output=1 << 62, max_calls=1 << 62, deadline=float("inf"))
_FORMAT_WIDTH = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\d*)(?:\.(\d+))?")


def _sequence_len(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


class TemplateSandbox(SandboxedEnvironment):
    """A SandboxedEnvironment whose binary operators, calls and unsafe attributes are checked."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    intercepted_unops = frozenset()

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            autoescape=autoescape, loader=None, undefined=ChainableUndefined, auto_reload=False, cache_size=0
        )
        self.globals.pop("lipsum", None)
        self.budget: _Budget = _NO_BUDGET

    # -- operators ----------------------------------------------------------------------------

    def call_binop(self, context: Context, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "*":
            self._check_repeat(left, right)
            self._check_repeat(right, left)
            return operator.mul(left, right)
        if operator_name == "**":
            if isinstance(right, int | float) and isinstance(left, int | float):
                if abs(right) > MAX_EXPONENT or (abs(right) > 1 and abs(left) > 2**64):
                    raise RenderError(f"exponents are limited to {MAX_EXPONENT} (and bases to 2**64)")
            return operator.pow(left, right)
        if operator_name == "%":
            if isinstance(left, str):
                for width, precision in _FORMAT_WIDTH.findall(left):
                    if (width and int(width) > MAX_FORMAT_WIDTH) or (precision and int(precision) > MAX_FORMAT_WIDTH):
                        raise RenderError(f"format widths are limited to {MAX_FORMAT_WIDTH}")
            return operator.mod(left, right)
        if operator_name == "+":
            a, b = _sequence_len(left), _sequence_len(right)
            if a is not None and b is not None and a + b > self.budget.max_output:
                raise RenderError("the template builds a value larger than the output limit")
            return operator.add(left, right)
        return super().call_binop(context, operator_name, left, right)

    def _check_repeat(self, seq: Any, times: Any) -> None:
        size = _sequence_len(seq)
        if size is not None and isinstance(times, int) and size * max(times, 0) > self.budget.max_output:
            raise RenderError("the template builds a value larger than the output limit")

    # -- calls and attributes -----------------------------------------------------------------

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self.budget.spend()
        return super().call(__context, __obj, *args, **kwargs)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        """Refuse at once (the default renders an Undefined that only fails when used)."""
        raise SecurityError(f"access to attribute {attribute!r} is not allowed in templates")

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.budget.spend()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.budget.spend()
        return super().getitem(obj, argument)


class Renderer:
    """Compiles templates once per key (`tpl_…:version:part`, versions are immutable) and renders
    them within budgets. One per worker process."""

    def __init__(self, *, cache_size: int = 512) -> None:
        self._html = TemplateSandbox(autoescape=True)
        self._plain = TemplateSandbox(autoescape=False)
        self._cache: dict[tuple[str, str], Any] = {}
        self._cache_size = cache_size

    def compile(self, source: str, *, html: bool, key: str | None = None) -> Any:
        """The compiled template (cached under `key`); RenderError for a syntax error."""
        part = "html" if html else "plain"
        if key is not None:
            found = self._cache.get((key, part))
            if found is not None:
                return found
        env = self._html if html else self._plain
        try:
            compiled = env.from_string(source)
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            where = f" (line {line})" if line else ""
            raise RenderError(f"template syntax error{where}: {exc.message or exc}") from None
        except (RecursionError, MemoryError):
            raise RenderError("the template is nested too deeply to compile") from None
        if key is not None:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[(key, part)] = compiled
        return compiled

    def render(
        self,
        source: str,
        data: dict[str, Any],
        *,
        html: bool,
        key: str | None,
        max_output: int,
        deadline: float,
        max_calls: int = DEFAULT_MAX_CALLS,
    ) -> str:
        compiled = self.compile(source, html=html, key=key)
        env = self._html if html else self._plain
        env.budget = _Budget(max_output=max_output, max_calls=max_calls, deadline=deadline)
        chunks: list[str] = []
        size = 0
        try:
            for chunk in compiled.generate(data):
                size += len(chunk)
                if size > max_output:
                    raise RenderError(f"the rendered template is longer than {max_output} characters")
                chunks.append(chunk)
        except RenderError:
            raise
        except SecurityError as exc:
            raise RenderError(f"the template is not allowed to do this: {exc}") from None
        except RecursionError:
            raise RenderError("the template recurses too deeply (a recursive macro?)") from None
        except MemoryError:
            raise RenderError("rendering the template needs too much memory") from None
        except TemplateError as exc:
            raise RenderError(f"the template failed: {exc.message or exc}") from None
        except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as exc:
            raise RenderError(f"the template failed: {type(exc).__name__}: {exc}") from None
        finally:
            env.budget = _NO_BUDGET
        return "".join(chunks)
