#!/usr/bin/env bash
# `npm run lab`: runs scripts/lab.ts inside the kernel harness (it needs IPVS and IPIP).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/uml-run.sh --timeout 900 --mem 2560M -- node scripts/lab.ts "$@"
