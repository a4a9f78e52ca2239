"""What the visibility stores share: the page token, page size and namespace checks, parsing a
list query, and turning stored columns back into a `WorkflowExecutionInfo`.

Kept in one place so that the SQLite and the Cassandra store answer bad input with the same
messages and keep the same token contract: a token is opaque to clients (base64 of a small JSON
list), names the position after which the next page starts in the listing order (start time,
run id) and carries the fingerprint of the namespace and query it belongs to, so that a token is
never applied to another query.
"""

from __future__ import annotations

import base64
from typing import Any

from legato import codec
from legato import query as lq
from legato.api import WorkflowExecutionInfo, WorkflowStatus
from legato.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
TOKEN_VERSION = 1


def encode_token(start_time_ms: int, run_id: str | None, fingerprint: str) -> bytes:
    """A page token for the position (start time, run id). A run id of None is a position
    between two start times (the Cassandra store stops there at a bucket's end): every run that
    started at `start_time_ms` is behind it."""
    return base64.urlsafe_b64encode(codec.dumps([TOKEN_VERSION, start_time_ms, run_id, fingerprint]).encode())


def decode_position(raw: bytes, fingerprint: str) -> tuple[int, str | None]:
    """The position of a token made by `encode_token`; InvalidArgument (reason InvalidPageToken)
    if it is not one, or belongs to another query or namespace."""
    try:
        version, start, run_id, fp = codec.loads(base64.urlsafe_b64decode(raw))
        if (version != TOKEN_VERSION or not isinstance(start, int) or isinstance(start, bool)
                or not (run_id is None or isinstance(run_id, str))):
            raise ValueError("not a token of this server")
    except Exception as e:
        raise InvalidArgument(f"list workflows: malformed next_page_token ({e})", reason="InvalidPageToken") from None
    if fp != fingerprint:
        raise InvalidArgument("list workflows: next_page_token belongs to another query or namespace; "
                              "list again without a token", reason="InvalidPageToken")
    return start, run_id


def decode_token(raw: bytes, fingerprint: str) -> tuple[int, str]:
    """The (start time, run id) of a token that must name a run (what the SQLite store issues)."""
    start, run_id = decode_position(raw, fingerprint)
    if run_id is None:
        raise InvalidArgument("list workflows: malformed next_page_token (not a token of this store)",
                              reason="InvalidPageToken")
    return start, run_id


def page_size(value: object) -> int:
    """The page size to use: the default for a missing or non-positive size, at most MAX_PAGE_SIZE."""
    size = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else DEFAULT_PAGE_SIZE
    return min(size, MAX_PAGE_SIZE)


def check_namespace(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what}: namespace must be a non-empty string")
    return value


def parse_list_query(text: str) -> lq.Query:
    """A query for listing: GROUP BY is refused (it is for counting only)."""
    q = lq.parse(text)
    if q.group_by is not None:
        raise InvalidArgument("list workflows: GROUP BY is only for counting (CountWorkflows, "
                              "legato workflow count)", reason="InvalidQuery")
    return q


def info_from_columns(namespace: str, run_id: str, workflow_id: str, workflow_type: str, task_queue: str,
                      status: str, start_time_ms: int, close_time_ms: int | None, history_length: int | None,
                      memo: str | None, search_attributes: str | None) -> WorkflowExecutionInfo:
    """A run as stored (memo and search attributes as JSON text; a missing close time is 0)."""
    return WorkflowExecutionInfo(
        namespace=str(namespace), run_id=str(run_id), workflow_id=str(workflow_id),
        workflow_type=str(workflow_type), task_queue=str(task_queue), status=WorkflowStatus(str(status)),
        start_time_ms=int(start_time_ms), close_time_ms=int(close_time_ms or 0),
        history_length=int(history_length or 0), memo=_json_object(memo),
        search_attributes=_json_object(search_attributes))


def _json_object(text: str | None) -> dict[str, Any]:
    value = codec.loads(str(text)) if text else {}
    return value if isinstance(value, dict) else {}
