#!/bin/sh
# Regenerate the Python modules of the gRPC API from legato.proto.
# Needs grpcio-tools (pip install -e '.[dev]'). The generated files are committed, so that
# installing Legato does not need grpcio-tools.
#
#   legato/proto/generate.sh            # uses $PYTHON, else .venv/bin/python, else python3
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ -n "${PYTHON:-}" ]; then py=$PYTHON
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3
fi
# Running protoc from the repository root with `-I .` makes the generated gRPC module import
# its messages package-relatively (`from legato.proto import legato_pb2`).
"$py" -m grpc_tools.protoc -I . \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  legato/proto/legato.proto
# Belt and braces: should a protoc version ever emit a bare `import legato_pb2`, fix it.
sed -i.bak -e 's/^import legato_pb2 as /from legato.proto import legato_pb2 as /' legato/proto/legato_pb2_grpc.py
rm -f legato/proto/legato_pb2_grpc.py.bak
echo "generated legato/proto/legato_pb2.py, legato_pb2.pyi, legato_pb2_grpc.py"
