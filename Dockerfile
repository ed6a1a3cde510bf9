# The streamkpi worker: `streamkpi consume` (the KCL MultiLangDaemon on Java 17 + the Python processor).
# Installs with the same scripts/setup.sh that `make setup` runs, so CI exercises these steps.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VENV=/opt/streamkpi/.venv \
    PATH=/opt/streamkpi/.venv/bin:$PATH \
    STREAMKPI_STATE_DIR=/var/lib/streamkpi

WORKDIR /opt/streamkpi
COPY requirements.txt requirements-kcl.txt pyproject.toml README.md ./
COPY scripts/ scripts/
COPY streamkpi/ streamkpi/
COPY consumer/ consumer/
COPY delivery/ delivery/
COPY aggregations/ aggregations/
COPY replay/ replay/
COPY dashboard/ dashboard/
COPY deadletters/ deadletters/

# Java 17 JRE (Debian), the pinned Python dependencies and the sha256-pinned KCL jars; no redis-server,
# the worker talks to a Redis elsewhere, and not the local extra (devstack, moto, hypercorn), a stand-in
# for AWS the worker never needs. Then drop apt's lists to keep the image small.
RUN scripts/setup.sh --no-redis --no-local \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/streamkpi --create-home streamkpi

USER streamkpi
# SIGTERM is the graceful stop: every shard checkpoints what is durable, then the worker exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamkpi"]
CMD ["consume"]
