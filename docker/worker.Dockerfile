# Faena worker: RandomX hashing and mining, AI queries (remote providers and a local model).
# Built by scripts/build.sh from a staged context (bin/, healthcheck.sh).
FROM debian:bookworm-slim
# CA certificates for HTTPS to Gemini / OpenAI-compatible endpoints.
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --system --uid 10002 --user-group --no-create-home --shell /usr/sbin/nologin faena
COPY bin/faena-worker /usr/local/bin/faena-worker
COPY healthcheck.sh /usr/local/bin/faena-healthcheck
# The default local model (scripts/fetch-model.sh): AI answers with no key.
COPY models/ /usr/share/faena/models/
ENV FAENA_WORKER_METRICS_ADDR=0.0.0.0:9100 \
    FAENA_LOG_JSON=true \
    FAENA_LOCAL_MODEL=/usr/share/faena/models/SmolLM2-135M-Instruct.Q4_1.gguf
USER faena
EXPOSE 9100
# /healthz is 200 once the worker is registered with the master.
HEALTHCHECK --interval=10s --timeout=6s --start-period=120s --retries=3 CMD ["faena-healthcheck", "9100", "/healthz"]
# PID 1 handles SIGTERM: drains (FAENA_DRAIN_TIMEOUT_MS), hands back what is left.
STOPSIGNAL SIGTERM
ENTRYPOINT ["faena-worker"]
