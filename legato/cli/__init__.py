"""The `legato` command line."""

import os

# gRPC's C core logs every failed TLS handshake (and other connection trouble) to stderr at INFO
# level, before any command can say what went wrong in one paragraph. GRPC_VERBOSITY=INFO (or
# DEBUG) set in the environment brings those lines back.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
