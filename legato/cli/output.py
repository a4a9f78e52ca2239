"""Printing results as readable text or as JSON (`--output json`)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import json
import sys
from typing import Any

import click


class ExitCode:
    OK = 0
    WORKFLOW_FAILED = 1  # the workflow closed with an error (failed, terminated, canceled, timed out)
    TASK_FAILING = 2  # a workflow task keeps failing: a bug, non-determinism or a forbidden call
    ERROR = 3  # bad input, unknown entry or workflow, server not reachable
    WAIT_TIMEOUT = 4  # `result --timeout` ran out while the workflow is still running


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return jsonable(value.to_dict())
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    click.echo(json.dumps(jsonable(value), ensure_ascii=False))


def fmt_time(ms: int) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def fmt_value(value: Any) -> str:
    return json.dumps(jsonable(value), ensure_ascii=False)


def error(message: str) -> None:
    click.echo(f"error: {message}", file=sys.stderr)
