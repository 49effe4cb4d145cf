# syntax=docker/dockerfile:1
# steward's reference service: a release build in a full Rust image, run from a distroless image
# as a non-root user.

FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, with empty sources: this layer is rebuilt only when the manifests or the
# lock file change, not on every source edit.
# Every member of the workspace must be there for cargo to read it; the bench examples the
# reference crate declares only need to exist.
COPY Cargo.toml Cargo.lock build.rs ./
COPY actors/Cargo.toml actors/Cargo.toml
COPY reference/Cargo.toml reference/Cargo.toml
COPY examples/hello/Cargo.toml examples/hello/Cargo.toml
RUN mkdir -p src actors/src reference/src examples/hello/src bench \
 && touch src/lib.rs actors/src/lib.rs reference/src/lib.rs \
 && echo 'fn main() {}' > reference/src/main.rs \
 && echo 'fn main() {}' > examples/hello/src/main.rs \
 && touch bench/lock_cycles.rs bench/job_throughput.rs bench/chaos.rs \
 && cargo build --release --locked -p steward-reference --bin steward \
 && rm -rf src actors/src reference/src

# The sources. The image has no .git, so the commit comes in as a build argument.
ARG STEWARD_GIT_COMMIT=unknown
ENV STEWARD_GIT_COMMIT=${STEWARD_GIT_COMMIT}
COPY src src
COPY docs docs
COPY actors/src actors/src
COPY reference/src reference/src
COPY config config
RUN touch src/lib.rs actors/src/lib.rs reference/src/lib.rs reference/src/main.rs \
 && cargo build --release --locked -p steward-reference --bin steward

# glibc and libgcc, nothing else: no shell, no package manager, no curl.
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /src/target/release/steward /app/steward
COPY config /app/config
ENV STEWARD_ENV=production
USER nonroot:nonroot
EXPOSE 8080
# The binary checks itself (GET /health/live), so the image needs no HTTP client.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/app/steward", "healthcheck"]
# steward drains on SIGTERM; a second signal exits at once.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/steward"]
CMD ["serve"]
