# syntax=docker/dockerfile:1
# The guardian binary: every service is a subcommand of this one image. The benchmarks
# are a binary of their own (guardian-bench) that this image does not build.
#   docker build -t guardian:0.1.0 .
#   docker run --rm guardian:0.1.0 --help

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY services services
COPY schemas schemas
COPY topics topics
COPY tests tests
# A workspace member: its manifest must be there, its code is never built here.
COPY bench bench
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p guardian \
 && install -m 0755 target/release/guardian /usr/local/bin/guardian

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 guardian \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin guardian
COPY --from=build /usr/local/bin/guardian /usr/local/bin/guardian
# The topic catalogue the topic-provisioning Job applies (GUARDIAN_TOPICS_DIR).
COPY topics /etc/guardian/topics
ENV GUARDIAN_TOPICS_DIR=/etc/guardian/topics
USER 65532:65532
EXPOSE 8080 9464-9469
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/guardian"]
CMD ["--help"]
