"""The gRPC APIs: `legato.proto` (schema) and its generated Python modules.

The public API (`WorkflowService`, served by the frontend) and the internal ones between
services (`HistoryService`, `MatchingService`). Regenerate with `legato/proto/generate.sh` after
editing the schema; `legato.wire` and `legato.wire_internal` convert between these messages and
the dataclasses of `legato.api`.
"""
