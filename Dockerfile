# syntax=docker/dockerfile:1
# tickhub image: the wheel (with the compiled Cython hot path) is built in a throw-away
# stage that has a C compiler; the runtime stage only installs wheels, so it carries no
# compiler, no sources and no build tools.
#
#   docker build -t tickhub:0.1.0 .
#   docker run --rm -p 8080:8080 -e HUB_JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')" \
#       --stop-timeout 30 tickhub:0.1.0
#
# NODE_ENV=production is the default here, so the hub refuses to start without JWT
# verification (HUB_JWT_SECRET of at least 32 bytes for HS256, or a public key). The stop
# timeout must cover the drain (TICKHUB_DRAIN_SECONDS, default 10 s; see deploy/SCALE-OUT.md).

ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads: pyproject.toml names README.md; setup.py globs ext/.
COPY pyproject.toml setup.py README.md ./
COPY ext ./ext
COPY src ./src
# tickhub's own wheel (build isolation fetches Cython and the pinned picows from
# [build-system]) plus a wheel of every runtime dependency, so the runtime stage installs
# offline.
RUN pip wheel --no-cache-dir . -w /wheels

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
# Fail the image build, not the first production start, if the hot path did not compile.
RUN pip install --no-cache-dir --no-index --find-links /wheels tickhub \
    && rm -rf /wheels \
    && python -c "import tickhub._ext as e; assert e.IMPLEMENTATION == 'compiled', e.COMPILED_IMPORT_ERROR"
# A numeric UID, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 tickhub \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tickhub
# An empty working directory: tickhub serve reads an optional .env.local from here.
WORKDIR /app
USER 10001:10001

# Bind every interface inside the container; the port here, EXPOSE, the HEALTHCHECK and
# deploy/k8s/deployment.yaml must agree (tests/test_deploy.py checks them).
ENV NEXT_PUBLIC_HUB_WS_URL=ws://0.0.0.0:8080 \
    NODE_ENV=production
EXPOSE 8080

# No curl in slim images: probe /healthz with the interpreter, on the port of the listen URL.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.parse, urllib.request; url = urllib.parse.urlsplit(os.environ.get('TICKHUB_LISTEN_URL') or os.environ['NEXT_PUBLIC_HUB_WS_URL']); urllib.request.urlopen(f'http://127.0.0.1:{url.port}/healthz', timeout=2)"]

# SIGTERM (docker stop, Kubernetes) drains: /readyz 503, clients closed with 1001, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tickhub", "serve"]
