# Image of the operator: `docker build -t ishosting-operator .`
# The runtime image has no shell and no package manager; the binary links only glibc, and TLS
# comes from rustls, so the distroless `cc` base is enough.

FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first, built against stub sources, so that a change to src/ alone reuses this
# layer instead of rebuilding every crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

COPY src ./src
# The copied sources can be older than the stub build's outputs; touching them makes cargo
# rebuild the crate itself.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin ishosting-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/ishosting-operator /ishosting-operator
# The `nonroot` user of the base image; numeric so that runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/ishosting-operator"]
CMD ["run"]
