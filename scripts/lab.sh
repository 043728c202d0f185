#!/usr/bin/env bash
# `npm run lab`: the local lab. Until the full lab (router, LB replicas, backends, client)
# lands, this shows the IPVS data plane inside the kernel harness: a declarative apply,
# the resulting table, a change, and the converged re-apply that writes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/uml-run.sh --timeout 600 -- bash -c '
set -e
portlb() { node lb-agent/bin/portlb.js "$@"; }
ip link add lab0 type dummy && ip link set lab0 up
ip addr add 10.0.1.254/24 dev lab0 && ip -6 addr add fd00:1::fe/64 dev lab0 nodad
echo "== portlb ipvs apply deploy/examples/ipvs-services.yaml"
portlb ipvs apply deploy/examples/ipvs-services.yaml
echo; echo "== portlb ipvs list"
portlb ipvs list
echo; echo "== the same file again: a converged table plans zero writes"
portlb ipvs apply deploy/examples/ipvs-services.yaml
echo; echo "== ipvsadm -Ln (the kernel, read by another tool)"
ipvsadm -Ln
'
