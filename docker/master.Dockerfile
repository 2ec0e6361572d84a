# Faena master: REST API, web page, Socket.IO, gRPC for workers, job store.
# It also carries faena-edge, the public ports in front of the masters
# (stack.yml's edge service), faena-autoscaler, which stack.autoscale.yml
# runs as its own service (entrypoint faena-autoscaler), and the faena CLI.
# Built by scripts/build.sh from a staged context (bin/, web/, healthcheck.sh).
FROM debian:bookworm-slim
# CA certificates for stratum+ssl:// pools (the system roots rustls loads);
# curl for the health check of a web port served over HTTPS.
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/faena --create-home --shell /usr/sbin/nologin faena
COPY bin/faena-master bin/faena-edge bin/faena-autoscaler bin/faena /usr/local/bin/
COPY healthcheck.sh /usr/local/bin/faena-healthcheck
COPY web/ /usr/share/faena/web/
ENV FAENA_HTTP_ADDR=0.0.0.0:8888 \
    FAENA_GRPC_ADDR=0.0.0.0:50051 \
    FAENA_DATA_DIR=/var/lib/faena \
    FAENA_WEB_DIR=/usr/share/faena/web \
    FAENA_LOG_JSON=true
VOLUME /var/lib/faena
USER faena
WORKDIR /var/lib/faena
EXPOSE 8888 50051 3333
# /healthz is 200 only with the broker connected, the store writable and jobs accepted.
HEALTHCHECK --interval=10s --timeout=6s --start-period=60s --retries=3 CMD ["faena-healthcheck", "8888", "/healthz"]
# The binary is PID 1 and handles SIGTERM: stops taking jobs, flushes the store.
STOPSIGNAL SIGTERM
ENTRYPOINT ["faena-master"]
