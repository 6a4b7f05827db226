# The shoal-sim image: the simulator CLI only (shoal-scenarios), which builds
# with no system libraries. The runtime crate (hwloc, io_uring) is not built.
#
#   docker build -t shoal-sim:$(git rev-parse --short HEAD) \
#       --build-arg GIT_COMMIT=$(git rev-parse HEAD) .
#
# GIT_COMMIT matters: the image has no git checkout, so shoal-sim reads the
# commit from SHOAL_SIM_GIT_COMMIT for its reports (which `report merge`
# compares) and for --seed-from-git. Without it, reports say "unknown" and
# --seed-from-git refuses to guess.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p shoal-scenarios --bin shoal-sim \
 && cp target/release/shoal-sim /usr/local/bin/shoal-sim

# Debian slim rather than distroless: the merge step of
# deploy/k8s/sim-sweep.yaml needs /bin/sh to wait for and glob the reports.
FROM debian:bookworm-slim
ARG GIT_COMMIT=
ENV SHOAL_SIM_GIT_COMMIT=${GIT_COMMIT}
COPY --from=build /usr/local/bin/shoal-sim /usr/local/bin/shoal-sim
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["shoal-sim"]
