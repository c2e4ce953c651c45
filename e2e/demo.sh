#!/usr/bin/env bash
# make demo: a real OpenBao, the real coffer, and `coffer mount` (the driver
# stand-in) mounting examples/demo/secretproviderclass.yaml; then a real moto
# (AWS Secrets Manager, SSM, STS) and examples/demo/aws-secretproviderclass.yaml
# through the `aws` socket. Prints the volumes as the pod would see them, then
# stops everything.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash e2e/setup.sh
# shellcheck disable=SC1091
source e2e/.tools/env
cargo build --locked --quiet --bin coffer --example mint-token
COFFER="$ROOT/target/debug/coffer"
MINT="$ROOT/target/debug/examples/mint-token"

RUN="$(mktemp -d "${TMPDIR:-/tmp}/coffer-demo.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$RUN"
}
trap cleanup EXIT

free_port() { "$COFFER_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_until() { # seconds, command...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        (( SECONDS < deadline )) || { echo "demo: timed out waiting for: $*" >&2; return 1; }
        sleep 0.1
    done
}

BAO_PORT="$(free_port)"
export BAO_ADDR="http://127.0.0.1:$BAO_PORT" BAO_TOKEN="demo-root-$RANDOM$RANDOM"
echo "==> OpenBao dev server on $BAO_ADDR"
"$COFFER_BAO_BIN" server -dev -dev-listen-address="127.0.0.1:$BAO_PORT" -dev-root-token-id="$BAO_TOKEN" >"$RUN/bao.log" 2>&1 &
pids+=($!)
wait_until 20 "$COFFER_BAO_BIN" status

bao() { "$COFFER_BAO_BIN" "$@"; }
echo "==> jwt auth that trusts the (test) ServiceAccount signing key, role demo for demo/web"
bao auth enable jwt >/dev/null
bao write auth/jwt/config jwt_validation_pubkeys=@tests/fixtures/sa-signing-key.pub.pem >/dev/null
bao policy write demo - >/dev/null <<'POLICY'
path "secret/data/demo/*" { capabilities = ["read"] }
path "pki/issue/demo" { capabilities = ["update"] }
POLICY
bao write auth/jwt/role/demo role_type=jwt user_claim=sub bound_audiences=vault \
    bound_subject=system:serviceaccount:demo:web token_policies=demo token_ttl=1h >/dev/null
echo "==> seeding secret/demo/db and secret/demo/app"
bao kv put -mount=secret demo/db username=app password='demo-only-password' >/dev/null
bao kv put -mount=secret demo/app settings='{"featureFlags":{"beta":true},"logLevel":"info"}' \
    signingKeyB64="$(printf 'demo-binary-\001\002\003' | base64)" >/dev/null
echo "==> PKI engine with a demo root CA and role demo"
bao secrets enable pki >/dev/null
bao secrets tune -max-lease-ttl=87600h pki >/dev/null
bao write -field=certificate pki/root/generate/internal common_name=demo-root-ca ttl=8760h >/dev/null
bao write pki/roles/demo allowed_domains=demo.example.com allow_subdomains=true max_ttl=72h >/dev/null

HEALTH="127.0.0.1:$(free_port)"
MOTO_PORT="$(free_port)"
MOTO_ADDR="http://127.0.0.1:$MOTO_PORT"
echo "==> moto (AWS Secrets Manager, SSM, STS) on $MOTO_ADDR"
"$COFFER_MOTO_BIN" -H 127.0.0.1 -p "$MOTO_PORT" >"$RUN/moto.log" 2>&1 &
pids+=($!)
wait_until 30 "$COFFER_PYTHON" -c "import urllib.request; urllib.request.urlopen('$MOTO_ADDR/moto-api/data.json')"
echo "==> seeding Secrets Manager demo/db and SSM /demo/api-key in us-west-2"
MOTO_ADDR="$MOTO_ADDR" "$COFFER_PYTHON" - <<'SEED'
import os, boto3
kw = dict(endpoint_url=os.environ["MOTO_ADDR"], region_name="us-west-2",
          aws_access_key_id="demo", aws_secret_access_key="demo")
boto3.client("secretsmanager", **kw).create_secret(
    Name="demo/db", SecretString='{"username":"app","password":"demo-only-aws-password","port":5432}')
boto3.client("ssm", **kw).put_parameter(
    Name="/demo/api-key", Value="demo-only-api-key", Type="SecureString")
SEED

echo "==> coffer serve (sockets $RUN/sockets/{coffer,aws}.sock, health $HEALTH)"
"$COFFER" serve --socket-dir "$RUN/sockets" --provider coffer --provider aws --health-addr "$HEALTH" \
    --vault-addr "$BAO_ADDR" --aws-endpoint-url "$MOTO_ADDR" --log-format text >"$RUN/coffer.log" 2>&1 &
pids+=($!)
wait_until 20 test -S "$RUN/sockets/coffer.sock"
wait_until 20 test -S "$RUN/sockets/aws.sock"

POD_UID="7d1c2f4e-0000-4000-8000-00000000d3m0"
"$MINT" demo web web-0 "$POD_UID" vault 600 >"$RUN/token"
echo "==> coffer mount (the driver stand-in) into $RUN/volume"
"$COFFER" mount --spc examples/demo/secretproviderclass.yaml --socket-dir "$RUN/sockets" \
    --pod-name web-0 --pod-namespace demo --pod-uid "$POD_UID" --service-account web \
    --token "vault=$RUN/token" --out "$RUN/volume"

echo "==> the volume, as the pod sees it (driver atomic-writer layout)"
(cd "$RUN/volume" && find . -mindepth 1 -maxdepth 1 -printf '%M %p -> %l\n' | sort && find -L . -path './..*' -prune -o -type f -printf '%M %5s %p\n' | sort)
echo "==> demo contents (demo data only; coffer itself never prints contents)"
for f in db-username config/app.json; do printf '%s: %s\n' "$f" "$(cat "$RUN/volume/$f")"; done
echo "app.env (rendered by a template from the objects above):"; sed 's/^/    /' "$RUN/volume/app.env"
printf 'signing.key (base64-decoded, %s bytes): %s\n' "$(wc -c <"$RUN/volume/signing.key")" "$(od -An -c "$RUN/volume/signing.key" | tr -s ' ')"
printf 'tls/tls.crt: %s\n' "$(head -1 "$RUN/volume/tls/tls.crt")"
echo "==> mount again, as the driver's republish does: same files, same versions (the certificate is reused)"
"$COFFER" mount --spc examples/demo/secretproviderclass.yaml --socket-dir "$RUN/sockets" \
    --pod-name web-0 --pod-namespace demo --pod-uid "$POD_UID" --service-account web \
    --token "vault=$RUN/token" --out "$RUN/volume" | head -1
"$MINT" demo web web-0 "$POD_UID" sts.amazonaws.com 600 >"$RUN/aws-token"
echo "==> coffer mount of the aws SecretProviderClass (aws.sock) into $RUN/aws-volume"
"$COFFER" mount --spc examples/demo/aws-secretproviderclass.yaml --socket-dir "$RUN/sockets" \
    --pod-name web-0 --pod-namespace demo --pod-uid "$POD_UID" --service-account web \
    --token "sts.amazonaws.com=$RUN/aws-token" --out "$RUN/aws-volume"
(cd "$RUN/aws-volume" && find -L . -path './..*' -prune -o -type f -printf '%M %5s %p\n' | sort)
echo "==> demo contents (demo data only)"
for f in demo_db db-username db-port api-key; do printf '%s: %s\n' "$f" "$(cat "$RUN/aws-volume/$f")"; done
echo "==> AWS calls (coffer's /metrics)"
"$COFFER_PYTHON" -c "import urllib.request; print(urllib.request.urlopen('http://$HEALTH/metrics').read().decode())" | grep -E '^coffer_(backend_requests_total\{backend="aws"|cache_lookups_total\{cache="aws_credentials")' || true
echo "==> coffer log (no secret values, no tokens)"
cat "$RUN/coffer.log"
