#!/usr/bin/env bash
# Regenerates the Python code for proto/ into client/curvecast_api (or into $1 for the CI check).
# Generated files are never edited by hand: change the .proto and run `make proto`.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-client}"
mkdir -p "$out"
python -m grpc_tools.protoc -I proto \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  $(find proto -name '*.proto' | sort)
for d in $(cd proto && find . -type d | sed 's|^\./\?||' | grep -v '^$'); do
  f="$out/$d/__init__.py"
  [ -f "$f" ] || echo '"""Generated from proto/ by scripts/gen_proto.sh; do not edit."""' > "$f"
done
