#!/usr/bin/env python3
"""A real gRPC-core (grpcio) client for coffer's CSIDriverProvider socket.

The end-to-end tests use it to prove that coffer accepts every `:authority`
form the Secrets Store CSI driver versions put on the wire, with a client
stack that is not coffer's own (tonic/h2).

Usage:
  python e2e/grpc_client.py --socket PATH --authority-mode MODE version
  python e2e/grpc_client.py --socket PATH --authority-mode MODE \
      mount --request-json FILE

MODE (the `:authority` pseudo-header sent on every call):
  localhost  "localhost" (channel option grpc.default_authority), what driver
             v1.6 sends (grpc-go WithAuthority("localhost")).
  path       the raw socket path, e.g. "/var/run/.../vault.sock", what drivers
             <= 1.5 send (grpc-go used the dial target's path as authority).
  percent    the socket path percent-encoded with
             urllib.parse.quote(path, safe=''), e.g. "%2Fvar%2Frun%2F...".
  default    no override: whatever grpcio itself sends for target
             "unix:PATH". Observed on the wire (HPACK-decoded HEADERS frame)
             with grpcio 1.85.1: gRPC core uses the target URI's path with the
             leading "/" dropped and the remaining "/" percent-encoded, i.e.
             for "unix:/tmp/run/x.sock" the authority is
             "tmp%2Frun%2Fx.sock" (same for "unix:///tmp/run/x.sock").
             Neither "localhost" nor the raw path.

The mount request file is JSON:
  {"attributes": "<json string>", "secrets": "null",
   "target_path": "/...", "permission": "420",
   "current_object_version": [{"id": "...", "version": "..."}]}   (optional)

Prints exactly one JSON line on stdout:
  version: {"ok": true, "version": ..., "runtime_name": ..., "runtime_version": ...}
  mount:   {"ok": true, "files": [{"path", "mode", "size"}],
            "object_versions": [{"id", "version"}], "error_code": "..."}
  failure: {"ok": false, "code": "<grpc StatusCode name>", "message": "..."}
File contents are never printed (they are secrets); only their sizes.

Exit status: 0 when a JSON line was printed (ok true or false), 2 on usage
errors (bad arguments, unreadable/invalid request file, stubs missing).
"""

import argparse
import json
import os
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
GEN_DIR = os.environ.get("COFFER_GRPC_GEN", os.path.join(HERE, ".tools", "gen"))

TIMEOUT_SECS = 30.0
AUTHORITY_MODES = ("localhost", "path", "percent", "default")


def usage_error(msg):
    print(f"grpc_client.py: {msg}", file=sys.stderr)
    sys.exit(2)


def load_stubs():
    sys.path.insert(0, GEN_DIR)
    try:
        import grpc  # noqa: F401
        from v1alpha1 import service_pb2, service_pb2_grpc
    except ImportError as e:
        usage_error(
            f"cannot import grpcio or the generated stubs from {GEN_DIR} ({e}); "
            "run `bash e2e/setup.sh` and use its venv python"
        )
    return service_pb2, service_pb2_grpc


def channel_options(mode, socket_path):
    if mode == "localhost":
        return [("grpc.default_authority", "localhost")]
    if mode == "path":
        return [("grpc.default_authority", socket_path)]
    if mode == "percent":
        return [("grpc.default_authority", urllib.parse.quote(socket_path, safe=""))]
    return []  # "default": grpcio picks it


def read_request(path, pb2):
    try:
        with open(path, "r", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        usage_error(f"cannot read --request-json {path}: {e}")
    if not isinstance(doc, dict):
        usage_error("--request-json must hold a JSON object")
    for key in ("attributes", "secrets", "target_path", "permission"):
        if key in doc and not isinstance(doc[key], str):
            usage_error(f"request field {key!r} must be a string")
    versions = []
    for ov in doc.get("current_object_version") or []:
        versions.append(pb2.ObjectVersion(id=str(ov.get("id", "")), version=str(ov.get("version", ""))))
    return pb2.MountRequest(
        attributes=doc.get("attributes", ""),
        secrets=doc.get("secrets", ""),
        target_path=doc.get("target_path", ""),
        permission=doc.get("permission", ""),
        current_object_version=versions,
    )


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description="grpcio client for coffer's provider socket")
    parser.add_argument("--socket", required=True, help="path of the provider's unix socket")
    parser.add_argument("--authority-mode", required=True, choices=AUTHORITY_MODES)
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECS, help="per-call deadline in seconds (default 30)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="call Version")
    mount = sub.add_parser("mount", help="call Mount")
    mount.add_argument("--request-json", required=True, help="JSON file with the MountRequest fields")
    args = parser.parse_args(argv)  # exits 2 on usage errors

    pb2, pb2_grpc = load_stubs()
    import grpc

    request = read_request(args.request_json, pb2) if args.command == "mount" else None

    target = "unix:" + args.socket
    channel = grpc.insecure_channel(target, options=channel_options(args.authority_mode, args.socket))
    try:
        stub = pb2_grpc.CSIDriverProviderStub(channel)
        if args.command == "version":
            resp = stub.Version(pb2.VersionRequest(version="v1alpha1"), timeout=args.timeout)
            emit({
                "ok": True,
                "version": resp.version,
                "runtime_name": resp.runtime_name,
                "runtime_version": resp.runtime_version,
            })
        else:
            resp = stub.Mount(request, timeout=args.timeout)
            out = {
                "ok": True,
                "files": [{"path": f.path, "mode": f.mode, "size": len(f.contents)} for f in resp.files],
                "object_versions": [{"id": ov.id, "version": ov.version} for ov in resp.object_version],
            }
            if resp.HasField("error"):
                out["error_code"] = resp.error.code
            emit(out)
    except grpc.RpcError as e:
        code = e.code() if hasattr(e, "code") else None
        details = e.details() if hasattr(e, "details") else str(e)
        emit({
            "ok": False,
            "code": code.name if code is not None else "UNKNOWN",
            "message": details or "",
        })
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
