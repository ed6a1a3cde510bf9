# The streamkpi worker: `streamkpi consume` (the KCL 3.1.3 MultiLangDaemon on Java 17 + the Python processor).
#
# Two stages on one base: `build` makes the virtual environment (the pinned dependencies, the sha256-pinned
# KCL jars, streamkpi itself) and `runtime` gets the Java 17 JRE and that venv, nothing else: no compiler,
# no pip, no apt lists, not the local stack (devstack, moto, hypercorn). It runs as uid 10001.
#
# The base is Python 3.11 (the version the tests run on) pinned by digest. Any Debian bookworm image with
# python3 and its venv module works: tests/integration/test_image.py builds one from Debian packages
# (mmdebstrap) and passes it as --build-arg BASE_IMAGE=..., as no registry is reachable there.
# Build with the docker format, or podman drops HEALTHCHECK and STOPSIGNAL stays the only health signal:
#   podman build --format docker -t streamkpi .        (docker build -t streamkpi . needs nothing more)
# Stop with a timeout longer than the KCL's graceful shutdown (STREAMKPI_KCL_SHUTDOWN_GRACE_MILLIS, 20 s):
#   docker stop -t 30 / ECS stopTimeout 30 / Kubernetes terminationGracePeriodSeconds 30 (README: Container).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${BASE_IMAGE} AS build
ARG VENV=/opt/streamkpi/venv
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# Dependencies first: this layer is reused until a requirements file changes.
COPY requirements.txt requirements-kcl.txt ./
RUN python3 -m venv "$VENV" \
    && "$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check -r requirements.txt \
    && "$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check --require-hashes --no-deps \
        -r requirements-kcl.txt
# The worker's packages only (.dockerignore is an allow list): devstack, the local stack, is not in the
# context, so it is not installed either; nor are the tests, scripts or any local state.
COPY . .
RUN "$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check --no-deps . \
    && test "$(find "$VENV" -path '*/amazon_kclpy/jars/*.jar' | wc -l)" -ge 70 \
    && "$VENV/bin/pip" uninstall --yes --disable-pip-version-check pip setuptools \
    && "$VENV/bin/streamkpi" settings >/dev/null

FROM ${BASE_IMAGE} AS runtime
ARG VENV=/opt/streamkpi/venv
# The Java 17 JRE from Debian (headless, no recommends); its security fixes come with a rebuild, so the
# version follows the Debian release the base is pinned to rather than an exact pin that would vanish from
# the mirror. The JRE's post-install script needs the man folder that slim images drop.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && groupadd --system --gid 10001 streamkpi \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/streamkpi --create-home \
        --shell /usr/sbin/nologin streamkpi
COPY --from=build "$VENV" "$VENV"

ENV PATH="$VENV/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAMKPI_STATE_DIR=/var/lib/streamkpi
WORKDIR /var/lib/streamkpi
USER 10001:10001

# SIGTERM is the graceful stop: `streamkpi consume` passes it to the KCL daemon, every shard checkpoints
# what is durable within STREAMKPI_KCL_SHUTDOWN_GRACE_MILLIS, then the worker exits 0.
STOPSIGNAL SIGTERM
# Unhealthy when the KCL daemon is gone or a shard this worker holds has not reported for
# STREAMKPI_HEALTH_MAX_SILENCE_SECONDS; healthy on a worker that holds no lease (yet).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["streamkpi", "health"]
ENTRYPOINT ["streamkpi"]
CMD ["consume"]
