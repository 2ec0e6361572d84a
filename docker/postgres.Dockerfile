# Faena's job store for a cluster: Debian's PostgreSQL 15, initialised on
# first start with a `faena` role and database (password from the stack's
# secret), serving TLS only to the network with the cluster CA's certificate.
# Built by scripts/build.sh; run by stack.postgres.yml.
FROM debian:bookworm-slim
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql
COPY postgres/entrypoint.sh /usr/local/bin/faena-postgres
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# Accepting connections (no login needed to ask).
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=3 \
  CMD pg_isready -q -h 127.0.0.1 -p 5432 -U faena -d faena
# Fast shutdown: rolls back open transactions, checkpoints, exits.
STOPSIGNAL SIGINT
ENTRYPOINT ["faena-postgres"]
