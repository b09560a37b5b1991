#!/usr/bin/env bash
# Regenerates crds-schemas/ from the api crate's types.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -p hack --bin gen-schemas -- crds-schemas
