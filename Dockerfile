# The gatemesh image: gate hosts and the orchestrator CLI (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gates gates
COPY broker broker
COPY orchestrator orchestrator
RUN pip install --no-cache-dir .
ENTRYPOINT []
CMD ["gatemesh", "demo"]
