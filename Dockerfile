# syntax=docker/dockerfile:1
# coffer's container image: `docker build -t coffer:0.1.0 .`
#
# The binary comes from `make release`, the same `cargo build --locked
# --release` developers and CI run. The final image is distroless (glibc,
# CA certificates, no shell) with coffer at /coffer; it runs as a non-root
# user by default. The Helm chart runs it as root only because it must create
# sockets in a root-owned hostPath (see charts/coffer/values.yaml).

ARG RUST_VERSION=1.94

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN make release && install -m 0755 target/release/coffer /coffer

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /coffer /coffer
USER 65532:65532
EXPOSE 8098
ENTRYPOINT ["/coffer", "serve"]
