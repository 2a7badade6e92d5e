# Build stage: the release binary.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY generators generators
COPY checker checker
COPY config config
COPY src src
RUN cargo build --release --locked --bin app && strip target/release/app

# Runtime stage: the binary alone, as a non-root user.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home app
COPY --from=build /src/target/release/app /usr/local/bin/app
USER app
ENTRYPOINT ["app"]
CMD ["start"]
