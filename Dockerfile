# Twilio Chat. The default command serves the panel, API and webhooks with gunicorn on port 3000
# (after `twilio-chat prepare`: migrations and the first admin); `twilio-chat worker` runs a
# reply worker, and any other `twilio-chat …` command runs in the same image.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    APP_HOST=0.0.0.0 \
    APP_PORT=3000 \
    DB_PATH=/app/data/app.db

WORKDIR /app

# uid and gid 1000: usually the host user who owns the ./data bind mount of docker-compose.yml.
RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

COPY pyproject.toml README.md ./
COPY src ./src
# The project (with its PostgreSQL driver) and gunicorn, which serves it.
RUN pip install --no-cache-dir . "gunicorn>=23"

COPY gunicorn.conf.py ./
COPY --chmod=755 deploy/entrypoint.sh ./deploy/entrypoint.sh
RUN mkdir data && chown app:app data

USER 1000:1000
VOLUME ["/app/data"]
EXPOSE 3000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('APP_PORT') or '3000'), timeout=4)"]

CMD ["/app/deploy/entrypoint.sh"]
