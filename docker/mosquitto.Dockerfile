# Faena's broker: Debian's Mosquitto with the stack's accounts, ACL and
# no-drop queue settings (mosquitto/setup.sh renders them from secrets).
FROM debian:bookworm-slim
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mosquitto mosquitto-clients \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && mkdir -p /mosquitto/run /mosquitto/data \
 && chown mosquitto:mosquitto /mosquitto/run /mosquitto/data
COPY mosquitto/ /usr/share/faena/mosquitto/
ENV MOSQUITTO_RUN_DIR=/mosquitto/run \
    MOSQUITTO_DATA_DIR=/mosquitto/data
VOLUME /mosquitto/data
USER mosquitto
EXPOSE 1883 1884 8883
# A real MQTT round trip as the observer (credentials from the file setup.sh
# writes for mosquitto_sub, never on a command line).
HEALTHCHECK --interval=10s --timeout=6s --start-period=20s --retries=3 \
  CMD XDG_CONFIG_HOME=/mosquitto/run mosquitto_sub -h 127.0.0.1 -p 1884 -t '$SYS/broker/uptime' -C 1 -W 5 >/dev/null
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/share/faena/mosquitto/setup.sh"]
