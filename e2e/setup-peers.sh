#!/usr/bin/env bash
# Installs the providers coffer is compared with (`make compat`,
# `make bench-peers`) into e2e/.tools/peers, with `go install` from the Go
# module proxy at pinned versions:
#   vault    github.com/hashicorp/vault-csi-provider v1.7.4
#   openbao  github.com/openbao/openbao-csi-provider v2.0.2
#   aws      github.com/aws/secrets-store-csi-driver-provider-aws v3.1.1
# The openbao and aws modules have no /v2 or /v3 suffix in their module path,
# so their release tags are not Go versions: they are pinned by the release
# commit's pseudo-version.
#
# A peer already named by COFFER_PEER_VAULT_BIN / COFFER_PEER_OPENBAO_BIN /
# COFFER_PEER_AWS_BIN is left alone. When the module proxy does not serve a
# peer, this says so and exits non-zero: set the variable to a binary of that
# version instead. Idempotent (a stamp per peer).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$ROOT/e2e/.tools/peers"
mkdir -p "$PEERS"

# name  env-var  package@version  (release)
pins=(
    "vault COFFER_PEER_VAULT_BIN github.com/hashicorp/vault-csi-provider@v1.7.4 v1.7.4"
    "openbao COFFER_PEER_OPENBAO_BIN github.com/openbao/openbao-csi-provider@v1.5.1-0.20260417052402-983c7222c9b8 v2.0.2"
    "aws COFFER_PEER_AWS_BIN github.com/aws/secrets-store-csi-driver-provider-aws@v0.0.0-20260602004341-5f47771b1164 v3.1.1"
)

failed=0
for pin in "${pins[@]}"; do
    read -r name var pkg release <<<"$pin"
    if [[ -n "${!var:-}" ]]; then
        if [[ -x "${!var}" ]]; then
            echo "e2e/setup-peers.sh: $name: using $var=${!var}" >&2
            continue
        fi
        echo "e2e/setup-peers.sh: $name: $var=${!var} is not an executable" >&2
        failed=1
        continue
    fi
    stamp="$PEERS/$name.stamp"
    if [[ -x "$PEERS/$name" && -f "$stamp" && "$(<"$stamp")" == "$pkg" ]]; then
        continue
    fi
    echo "e2e/setup-peers.sh: go install $pkg ($name $release)" >&2
    tmp="$(mktemp -d "$PEERS/install.XXXXXX")"
    if GOBIN="$tmp" GOFLAGS="-trimpath -buildvcs=false" go install "$pkg"; then
        mv -f "$tmp"/* "$PEERS/$name"
        echo "$pkg" >"$stamp"
    else
        echo "e2e/setup-peers.sh: $name $release could not be installed from the module proxy;" \
             "set $var to a binary of that release" >&2
        failed=1
    fi
    rm -rf "$tmp"
done
exit "$failed"
