# syntax=docker/dockerfile:1
# The Baton member agent image: /usr/local/bin/baton-agent. Build from the repository root:
#   docker build -f docker/agent.Dockerfile -t baton/agent:dev .
# Flags: docs/agent-api.md. The chart's demo agents run it with the demo backend.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p baton-agent --bin baton-agent \
    && install -D -m 0755 target/release/baton-agent /out/baton-agent

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="baton-agent" \
      org.opencontainers.image.description="Baton member agent (control API over mutual TLS)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/baton-agent /usr/local/bin/baton-agent
# nonroot, numerically: kubelet can only verify runAsNonRoot against a numeric user.
USER 65532:65532
EXPOSE 7443 7444
ENTRYPOINT ["/usr/local/bin/baton-agent"]
