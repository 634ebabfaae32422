# The sidecar HTTP dispatcher: `sidecar-dispatcher run`, the production runner (a lean mitmproxy
# master with the dispatcher addon).
#
#   docker build -t sidecar-dispatcher:0.1.0 .
#   docker run --rm -p 5000:5000 -v "$PWD/config.yaml:/app/config/config.yaml:ro" \
#       sidecar-dispatcher:0.1.0
FROM python:3.13-slim

# No bytecode is written at run time: the root filesystem may be read-only.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# The package and its runtime dependencies only (mitmproxy, PyYAML): no test or deploy extras.
COPY pyproject.toml README.md ./
COPY addons/ ./addons/
RUN pip install --no-cache-dir . && rm -rf build addons/*.egg-info

# A numeric uid, so that Kubernetes can verify runAsNonRoot. mitmproxy writes only to its
# confdir (the CA it generates at start-up, even when no TLS is used).
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin sidecar \
    && install -d -o sidecar -g sidecar /var/lib/sidecar/mitmproxy \
    && install -d /app/config
USER 10001

# SIDECAR_CONFIG           the dispatcher's YAML; mount it (e.g. a ConfigMap on /app/config).
# SIDECAR_PORT             the listening port (read by the runner).
# SIDECAR_LISTEN_HOST      empty: every interface, IPv4 and IPv6 (probes, `docker run -p`).
# SIDECAR_CONFDIR          mitmproxy's confdir; an emptyDir when the root fs is read-only.
# SIDECAR_WORKERS          processes sharing the port; give the container that many CPUs.
ENV SIDECAR_CONFIG=/app/config/config.yaml \
    SIDECAR_PORT=5000 \
    SIDECAR_LISTEN_HOST="" \
    SIDECAR_CONFDIR=/var/lib/sidecar/mitmproxy \
    SIDECAR_WORKERS=1
EXPOSE 5000

# exec: the runner becomes PID 1 and handles SIGTERM itself (it drains open connections for up
# to 5 s). stream_large_bodies: bodies over 1 MB pass through without being held in memory, so
# the memory limit stays honest. The runner has no per-flow dump: the dispatcher logs one line
# per request.
CMD ["/bin/sh", "-c", "exec sidecar-dispatcher run \
    --workers \"${SIDECAR_WORKERS}\" \
    --set listen_host=\"${SIDECAR_LISTEN_HOST}\" \
    --set confdir=\"${SIDECAR_CONFDIR}\" \
    --set stream_large_bodies=1m"]
