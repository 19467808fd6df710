# Image with the echo bot and the demo Prosody launcher, used by docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p echo-bot -p test-prosody --bin echo-bot --bin demo-server

FROM debian:bookworm-slim
# policy-rc.d keeps the package from starting Prosody's system service; demo-server runs it.
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prosody ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/echo-bot /src/target/release/demo-server /usr/local/bin/
