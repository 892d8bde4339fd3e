# syntax=docker/dockerfile:1
# Production image: the gateway only. It talks to a real MongoDB (MONGODB_URI); the embedded
# SecantusDB (GPL, optional extra) is not installed here. The package carries everything it
# reads (schemas, the demo's mappings and flows: gateway/shipped/); mount a directory and set
# GATEWAY_SCHEMA_DIR to use entity schemas of your own.

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --upgrade pip && pip install .

FROM python:3.11-slim AS runtime
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gateway
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_DATA_DIR=/app/var
RUN mkdir -p /app/var && chown gateway /app/var
USER gateway
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["gateway"]
CMD ["serve"]
