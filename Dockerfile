# tpi-cds: CDS Hooks service for trigger point injections (gunicorn, an event-loop front per
# worker). Build: docker build -t tpi-cds .
# Trial:  docker run -p 127.0.0.1:8080:8080 -e TPI_CDS_AUTH_DISABLED=true tpi-cds
# Real:   see the README's Docker section (issuers file, TPI_CDS_PUBLIC_BASE_URL).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir --upgrade pip
# Dependencies first, in their own layer: editing the sources does not rebuild them.
# The packages are empty stand-ins here, so only the declared requirements are resolved.
COPY setup.cfg pyproject.toml README.md LICENSE ./
RUN mkdir -p cards cds_service \
 && touch cards/__init__.py cds_service/__init__.py \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels . \
 && rm /wheels/tpi_cds-*.whl
# Then the project itself.
COPY cards ./cards
COPY cds_service ./cds_service
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /app .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tpi-cds" \
      org.opencontainers.image.description="CDS Hooks 2.0 service: decision support for trigger point injections" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.11-slim-bookworm"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TPI_CDS_BIND=0.0.0.0:8080 \
    TPI_CDS_DATA_DIR=/data
RUN groupadd --system --gid 10001 tpicds \
 && useradd --system --uid 10001 --gid tpicds --home-dir /nonexistent --shell /usr/sbin/nologin tpicds \
 && mkdir -p /data && chown tpicds:tpicds /data
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
COPY --from=build /app /app
RUN python -m pip install --no-cache-dir --no-deps --no-index /app/*.whl && rm -rf /app
USER tpicds
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
CMD ["tpi-cds", "serve"]
