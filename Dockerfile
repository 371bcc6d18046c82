# capgate's container image: the service and its remote OCR worker, no training extras (no torch).
#   docker build -t capgate .
#   docker run -p 8000:8000 -v capgate-data:/var/lib/capgate capgate            (SQLite, one machine)
#   docker compose -f deploy/compose.yaml up -d                                 (PostgreSQL, docs/deploy.md)
# The entry point is the capgate command: `docker run capgate keys create --sandbox` and so on.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY capgate ./capgate
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CAPGATE_DB=/var/lib/capgate/capgate.db \
    CAPGATE_HOST=0.0.0.0 \
    CAPGATE_PORT=8000
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/capgate --create-home --shell /usr/sbin/nologin capgate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels /root/.cache
USER capgate
WORKDIR /var/lib/capgate
VOLUME ["/var/lib/capgate"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('CAPGATE_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["capgate"]
CMD ["serve"]
