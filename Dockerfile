# tpi-cds: CDS Hooks service for trigger point injections, served by gunicorn.
# Build: docker build -t tpi-cds .    Run: docker run -p 8080:8080 -v tpi-cds-data:/data tpi-cds
FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY cards ./cards
COPY cds_service ./cds_service
RUN python -m pip install --no-cache-dir --upgrade pip \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TPI_CDS_BIND=0.0.0.0:8080 \
    TPI_CDS_DATA_DIR=/data
RUN groupadd --system --gid 10001 tpicds \
 && useradd --system --uid 10001 --gid tpicds --home-dir /nonexistent --shell /usr/sbin/nologin tpicds \
 && mkdir -p /data && chown tpicds:tpicds /data
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER tpicds
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
CMD ["tpi-cds", "serve"]
