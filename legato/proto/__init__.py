"""The public gRPC API: `legato.proto` (schema) and its generated Python modules.

Regenerate with `legato/proto/generate.sh` after editing the schema; `legato.wire` converts
between these messages and the dataclasses of `legato.api`.
"""
