# One image for every groundplane service; the command picks the service:
#   docker run IMAGE serve tracking --port 50051
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends mosquitto libhamlib-utils \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --system --create-home --home-dir /var/lib/groundplane groundplane
WORKDIR /opt/groundplane
COPY pyproject.toml README.md ./
COPY services ./services
COPY gateway ./gateway
RUN pip install --no-cache-dir .

USER groundplane
EXPOSE 50051
ENTRYPOINT ["groundplane"]
CMD ["serve", "tracking", "--host", "0.0.0.0", "--port", "50051", "--db", "/var/lib/groundplane/tracking.sqlite3"]
