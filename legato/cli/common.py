"""Options and plumbing shared by the client commands."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from legato import DEFAULT_NAMESPACE
from legato.cli.cli_error import CliError
from legato.cli.security import client_security_options
from legato.codec import parse_json_input
from legato.durations import parse_duration_ms
from legato.event_loops import EventLoopSettingError, event_loop_name
from legato.event_loops import run as run_on_loop
from legato.gc_tuning import GcSettingError, tune_gc

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

DEFAULT_ADDRESS = "127.0.0.1:7233"


def client_options(fn: F) -> F:
    return client_options_with("text", "json")(fn)


def client_options_with(*outputs: str, output_help: str = "Output format.") -> Callable[[F], F]:
    """`client_options` with another set of --output formats (e.g. text, json, jsonl)."""
    def decorate(fn: F) -> F:
        return _client_options(fn, list(outputs), output_help)
    return decorate


def _client_options(fn: F, outputs: list[str], output_help: str) -> F:
    fn = client_security_options(fn)
    fn = click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True, help="Namespace.")(fn)
    fn = click.option("--output", "output", type=click.Choice(outputs), default="text",
                      show_default=True, help=output_help)(fn)
    fn = click.option("--address", default=DEFAULT_ADDRESS, show_default=True, envvar="LEGATO_ADDRESS",
                      help="Server address HOST:PORT, or several (a cluster's frontends) as H1:P1,H2:P2: "
                           "the next is used when one cannot be reached.")(fn)
    return fn


def run_main(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's main coroutine as every Legato process does: the collector's settings
    (legato/gc_tuning.py), then the event loop LEGATO_EVENT_LOOP names (legato/event_loops.py)."""
    try:
        loop = event_loop_name()
        tune_gc()
    except (GcSettingError, EventLoopSettingError) as e:
        coro.close()
        raise CliError(str(e)) from None
    return run_on_loop(coro, loop)


def run_async(coro_fn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    @functools.wraps(coro_fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return run_main(coro_fn(*args, **kwargs))  # type: ignore[arg-type]
    return wrapper


def parse_input(text: str | None) -> list[Any]:
    """`--input JSON` is the workflow's single argument; no --input means no arguments."""
    if text is None:
        return []
    return [parse_json_input(text, "--input")]


def parse_timeout(text: str | None, what: str = "--timeout") -> int | None:
    if text is None:
        return None
    try:
        return parse_duration_ms(text, what)
    except ValueError as e:
        raise CliError(str(e)) from e


def override_section(section: M, model: type[M], flags: tuple[tuple[str, object], ...], what: str = "") -> M:
    """A config section with the command-line flags that were given (name, value) on top,
    validated like the config file; CliError naming the bad fields (after `what`) otherwise."""
    changes = {k: v for k, v in flags if v is not None}
    if not changes:
        return section
    try:
        return model.model_validate({**section.model_dump(), **changes})
    except ValidationError as e:
        raise CliError(what + "; ".join(_flag_error(model, err) for err in e.errors())) from e


def _flag_error(model: type[BaseModel], err: Any) -> str:
    """One bad field, for people: its value and what it should be (a pattern's regex says little)."""
    name = str(err["loc"][0]) if err["loc"] else "?"
    field = model.model_fields.get(name)
    if err["type"] == "string_pattern_mismatch":
        expected = field.description if field is not None and field.description else "another form"
        return f"{name} = {err['input']!r} is not valid: expected {expected}"
    return f"{name}: {err['msg']}"


def quiet_library_logs(name: str) -> None:
    """Silence a client library's logger (unless it is set to debug): it logs each failed
    connection attempt, often with a traceback; the command's error says it once."""
    lib_log = logging.getLogger(name)
    if not lib_log.isEnabledFor(logging.DEBUG):
        lib_log.setLevel(logging.CRITICAL)
