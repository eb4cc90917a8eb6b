# syntax=docker/dockerfile:1
# The Baton operator image: /usr/local/bin/baton (and kubectl-baton, the same binary, for the
# kubectl plugin). Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t baton/operator:dev .
# See docs/install.md for the command line the chart runs (`baton operator ...`).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds; the binary is
# copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p baton --bin baton \
    && install -D -m 0755 target/release/baton /out/baton

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="baton-operator" \
      org.opencontainers.image.description="Baton: declarative, failover-ordered upgrades of HA clusters and meshes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/baton /usr/local/bin/baton
# kubectl finds plugins by name; a second copy avoids needing a shell or ln in the image.
COPY --from=build /out/baton /usr/local/bin/kubectl-baton
# nonroot, numerically: kubelet can only verify runAsNonRoot against a numeric user.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/baton"]
CMD ["operator"]
