#!/usr/bin/env bash
# Sets up (idempotently), builds, and runs the main job on the shipped example: inspect a
# train-mode archive, switch it to eval, inspect the result.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
example=examples/resnetish_train.pt2
out=build/resnetish_eval.pt2
echo "== exmode inspect $example"
./build/exmode inspect "$example"
echo "== exmode eval $example -o $out"
./build/exmode eval "$example" -o "$out"
echo "== exmode inspect $out"
./build/exmode inspect "$out"
