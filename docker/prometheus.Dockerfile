# Prometheus for the optional monitoring overlay (stack.monitoring.yml):
# Debian's package, with Faena's scrape config and alert rules
# (monitoring/prometheus.yml, monitoring/alerts.yml).
FROM debian:bookworm-slim
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
COPY monitoring/prometheus.yml monitoring/alerts.yml /etc/faena-prometheus/
RUN promtool check config /etc/faena-prometheus/prometheus.yml
VOLUME /prometheus
USER prometheus
EXPOSE 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/bin/prometheus", "--version"]
ENTRYPOINT ["/usr/bin/prometheus", "--config.file=/etc/faena-prometheus/prometheus.yml", \
  "--storage.tsdb.path=/prometheus", "--storage.tsdb.retention.time=15d", "--web.listen-address=:9090"]
