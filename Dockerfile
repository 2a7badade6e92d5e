# redis-ql's `app`, for Docker (BuildKit, the default since Docker 23) and podman:
#
#   docker build -t redis-ql .            # compiles the release binary inside
#   docker compose up -d --scale app=200  # Redis and 200 copies (docker-compose.yml)
#
# Stages: `build` compiles; `runtime` is the image without its binary;
# `prebuilt` (for CI) puts in a binary built outside, target/ci-image/app;
# `app`, the last and so the default, puts in the one `build` compiled.
# `prebuilt` and `app` differ only in where /usr/local/bin/app comes from.

# ---- build: the release binary ------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer of their own: the manifests of every
# workspace member (cargo loads the whole workspace) with stub sources, built
# once. This layer is rebuilt only when a manifest or Cargo.lock changes, not
# when the code does. `fuzz` is excluded from the workspace and not copied.
COPY Cargo.toml Cargo.lock ./
COPY generators/Cargo.toml generators/
COPY checker/Cargo.toml checker/
COPY bench/Cargo.toml bench/
COPY testkit/Cargo.toml testkit/
RUN mkdir -p src generators/src checker/src bench/src testkit/src tests/suite \
 && echo 'fn main() {}' >src/main.rs \
 && echo 'fn main() {}' >bench/src/main.rs \
 && echo 'fn main() {}' >tests/suite/main.rs \
 && touch src/lib.rs generators/src/lib.rs checker/src/lib.rs testkit/src/lib.rs \
 && cargo build --release --locked --bin app \
 && rm -rf src generators/src

# Then the code `app` is made of (checker, bench and testkit keep their stubs:
# the binary does not use them). Touched, so that cargo never takes a stub's
# build for the real one whatever the copied files' times are.
COPY src src
COPY generators/src generators/src
RUN find src generators/src -type f -exec touch {} + \
 && cargo build --release --locked --bin app \
 && strip target/release/app \
 && ./target/release/app --version

# ---- runtime: everything but the binary ------------------------------------------
FROM debian:bookworm-slim AS runtime
# ca-certificates: `--tls`/rediss:// check the server against the system's
# roots unless --tls-ca names a CA.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
# The HTTP endpoints of `app start --http` (/healthz, /readyz, /metrics).
ENV APP_HTTP=0.0.0.0:9100
EXPOSE 9100
# Ready: registered with a live heartbeat and connected (GET /readyz, 200).
# bash's /dev/tcp, so the image needs no curl or wget; the port follows APP_HTTP.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${APP_HTTP##*:} && printf 'GET /readyz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && IFS= read -r -t 2 line <&3 && [[ $line == *' 200 '* ]]"]
USER 10001:10001
# SIGTERM (docker stop) lets a copy finish the messages in hand and hand
# over the generator's lease (--shutdown-timeout-ms, 10 s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["app"]
CMD ["start"]

# ---- prebuilt: for CI, a binary built on the host (same glibc as bookworm) -----
# Not built by a plain `docker build`; `--target prebuilt` skips the `build` stage.
FROM runtime AS prebuilt
COPY target/ci-image/app /usr/local/bin/app

# ---- app: the image users get ----------------------------------------------------
FROM runtime AS app
COPY --from=build /src/target/release/app /usr/local/bin/app
