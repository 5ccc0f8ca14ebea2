# The gatemesh image: gate hosts and the orchestrator CLI (see docker-compose.yml).
FROM docker.io/library/python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# The dependencies (and the build backend) first, in a layer of their own, read from
# pyproject.toml: a change to the code reinstalls none of them.
COPY pyproject.toml ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
print("\n".join(p["build-system"]["requires"] + p["project"]["dependencies"]))' > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY README.md ./
COPY gates gates
COPY broker broker
COPY orchestrator orchestrator
COPY viz viz
COPY web web
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && rm -rf build *.egg-info
ENTRYPOINT []
CMD ["gatemesh", "demo"]
