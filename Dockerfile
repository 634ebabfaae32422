# The sidecar HTTP dispatcher: `sidecar-dispatcher run`, the production runner (a lean mitmproxy
# master with the dispatcher addon).
#
#   docker build -t sidecar-dispatcher:0.1.0 .
#   docker run --rm -p 5000:5000 -p 9901:9901 \
#       -v "$PWD/config.yaml:/app/config/config.yaml:ro" sidecar-dispatcher:0.1.0
#   curl localhost:9901/readyz    # the admin listener: /metrics, /healthz, /readyz
FROM python:3.13-slim

# No bytecode is written at run time: the root filesystem may be read-only.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# The package and its runtime dependencies only (mitmproxy, PyYAML, prometheus-client): no test
# or deploy extras.
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
# SIDECAR_PORT             the proxy's listening port (read by the runner).
# SIDECAR_LISTEN_HOST      the proxy's address; empty: every interface, IPv4 and IPv6 (what
#                          `docker run -p` needs). 127.0.0.1 when only the app in the same pod
#                          may send through it (the Kubernetes example).
# SIDECAR_ADMIN            HOST:PORT of the admin listener: GET /metrics (Prometheus), /healthz,
#                          /readyz (503 from SIGTERM on, while requests drain); it never proxies.
#                          Every interface here, because the container is the boundary: probes
#                          and Prometheus come from outside it. Empty turns it off.
# SIDECAR_ACCESS_LOG       one line per completed request: text, json (one object per line on
#                          stdout, for a log shipper) or off.
# SIDECAR_CONFDIR          mitmproxy's confdir; an emptyDir when the root fs is read-only.
# SIDECAR_WORKERS          processes sharing the port; give the container that many CPUs.
ENV SIDECAR_CONFIG=/app/config/config.yaml \
    SIDECAR_PORT=5000 \
    SIDECAR_LISTEN_HOST="" \
    SIDECAR_ADMIN=0.0.0.0:9901 \
    SIDECAR_ACCESS_LOG=text \
    SIDECAR_CONFDIR=/var/lib/sidecar/mitmproxy \
    SIDECAR_WORKERS=1
# The proxy ($SIDECAR_PORT) and the admin listener ($SIDECAR_ADMIN).
EXPOSE 5000 9901

# exec: the runner becomes PID 1 and handles SIGTERM itself (/readyz turns 503 and open
# connections drain for up to 5 s). stream_large_bodies: bodies over 1 MB pass through without
# being held in memory, so the memory limit stays honest. The runner has no per-flow dump: the
# dispatcher logs one line per request ($SIDECAR_ACCESS_LOG), written when the request
# completes, with its status and duration. The runner reads $SIDECAR_ADMIN itself.
CMD ["/bin/sh", "-c", "exec sidecar-dispatcher run \
    --workers \"${SIDECAR_WORKERS}\" \
    --set listen_host=\"${SIDECAR_LISTEN_HOST}\" \
    --set confdir=\"${SIDECAR_CONFDIR}\" \
    --set stream_large_bodies=1m"]
