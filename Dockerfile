# syntax=docker/dockerfile:1
# Legato's container image: one image for every role.
#
#   docker build -t legato .
#   docker run --rm legato schema setup --store cassandra --hosts cassandra --keyspace legato
#   docker run -p 7233:7233 -p 8233:8233 -v legato-data:/var/lib/legato legato \
#       server start-dev --host 0.0.0.0 --db /var/lib/legato/legato.db   # 8233: the HTTP API
#   docker run legato server start --role history --frontend-address ... (cluster: see README)
#   docker run -v "$PWD/examples/shop:/app:ro" legato worker --entries /app --address HOST:7233
#
# The Lua application is mounted at /app (read-only is enough), or baked into a derived image:
#   FROM legato
#   COPY myapp /app
#   CMD ["worker", "--entries", "/app", "--address", "legato-frontend:7233"]
#
# It runs as the non-root user `legato` (uid/gid 10001); its data dir /var/lib/legato (a volume)
# holds the SQLite file. The install steps are deploy/container/install.sh, which
# deploy/container/build.sh also runs to build the same image without a registry (debootstrap).
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS base
COPY deploy/container/install.sh /usr/local/lib/legato/install.sh
RUN bash /usr/local/lib/legato/install.sh base && bash /usr/local/lib/legato/install.sh clean

# The web UI (frontend/ui: Preact, Vite), built by scripts/build-ui.sh with Debian's Node.js and
# npm (a throwaway stage: neither is in the image).
FROM base AS ui
COPY scripts/build-ui.sh /usr/local/lib/legato/build-ui.sh
COPY frontend/ui /src/frontend/ui
RUN bash /usr/local/lib/legato/build-ui.sh /src/frontend/ui

# Legato's wheel, built from the sources (a throwaway stage), with the web UI built above.
FROM base AS wheel
COPY pyproject.toml /src/
COPY legato /src/legato
COPY history /src/history
COPY matching /src/matching
COPY frontend /src/frontend
COPY worker /src/worker
COPY --from=ui /src/frontend/ui/dist /src/frontend/ui/dist
RUN bash /usr/local/lib/legato/install.sh wheel /src /wheels

FROM base
COPY --from=wheel /wheels/ /tmp/wheels/
RUN bash /usr/local/lib/legato/install.sh legato /tmp/wheels/legato-*.whl \
    && rm -rf /tmp/wheels && bash /usr/local/lib/legato/install.sh clean

# deploy/container/build.sh reads the lines below (ENV, USER, WORKDIR, VOLUME, EXPOSE, ENTRYPOINT,
# CMD) to configure the image it builds and deploy/container/run.sh runs: keep each on one line.
ENV PATH=/opt/legato/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV LANG=C.UTF-8
ENV PYTHONUNBUFFERED=1
ENV HOME=/var/lib/legato
USER 10001:10001
WORKDIR /var/lib/legato
VOLUME ["/var/lib/legato"]
EXPOSE 7233 7234 7235 8233
ENTRYPOINT ["legato"]
CMD ["--help"]
