# syntax=docker/dockerfile:1.7
# One image with every binary; docker-compose.yml picks the command per service. notifyctl is
# in it too: `docker compose exec bff-1 notifyctl stats --url http://nginx:8080`.
#
# Build stage: BuildKit cache mounts keep the cargo registry and the target directory between
# builds, so a source change recompiles the workspace's crates, not its ~400 dependencies.
# protox compiles the gRPC contract in build.rs: no protoc needed.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p bff -p users-service -p notification-service -p workers -p repeater -p notifyctl \
    && mkdir -p /out \
    && cp target/release/bff target/release/users-service target/release/notification-service \
          target/release/workers target/release/repeater target/release/notifyctl /out/

# Runtime: Debian slim (glibc, zlib: what the binaries link), CA certificates for providers,
# no shell tools beyond the base, a fixed non-root user. Each binary has `healthcheck`.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin notify
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
ENV NOTIFY_LOG_FORMAT=json
EXPOSE 8080 8081 8082 8084 8085
CMD ["bff", "serve"]
