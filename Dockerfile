# One image with every binary; docker-compose.yml picks the command per service.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/bff /src/target/release/users-service \
     /src/target/release/notification-service /src/target/release/workers \
     /src/target/release/repeater /usr/local/bin/
USER nobody
