#!/bin/bash
# An OCI runtime with a kubelet's capability semantics, for podman: runc, after clearing
# the ambient and inheritable capability sets of the container's process. podman puts
# added capabilities into the ambient set of a non-root user; containerd and CRI-O do
# not, so there a non-root process keeps a capability only through a file capability
# (which no_new_privs disables). Used as `podman --runtime test/harness/cri-runtime.sh`.
set -euo pipefail
bundle=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --bundle | -b) bundle="${args[$((i + 1))]}" ;;
    --bundle=*) bundle="${args[$i]#--bundle=}" ;;
  esac
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  jq '.process.capabilities.ambient = [] | .process.capabilities.inheritable = []' \
    "$bundle/config.json" >"$bundle/config.json.cri"
  mv "$bundle/config.json.cri" "$bundle/config.json"
fi
exec "$(command -v runc || echo /usr/sbin/runc)" "$@"
