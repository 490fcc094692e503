# The cluster test's PostgreSQL: Debian's package on a local Debian base, set up from the same
# environment as the official postgres image (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB;
# data in /var/lib/postgresql/data), so compose.yaml's postgres service runs unchanged.
# Build context: tests/cluster.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
USER postgres
ENV PGDATA=/var/lib/postgresql/data
CMD ["/usr/local/bin/postgres-entrypoint.sh"]
