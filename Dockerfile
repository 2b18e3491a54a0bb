# Shadowgate runtime image: `shadowgate serve`, `judge` and `loadtest`, no TensorFlow.
#   docker build -t ghcr.io/shadowgate/shadowgate:0.2.0 .
#   docker build --build-arg EXTRA_PIP="s3fs gcsfs" -t ...   # golden sets from s3:// / gs://
# Installs exactly requirements-runtime*.txt (deploy/install-runtime.sh, the
# same script `make runtime-venv` runs for the tests that measure it). The
# stand-in model server and the demo need TensorFlow: they are not in here.
FROM python:3.11-slim-bookworm

ARG EXTRA_PIP=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements-runtime.txt requirements-runtime-nodeps.txt requirements-nodeps.txt pyproject.toml README.md ./
COPY deploy/install-runtime.sh deploy/install-runtime.sh
COPY webhook ./webhook
COPY analyses ./analyses
COPY loadtest ./loadtest
RUN sh deploy/install-runtime.sh python . \
 && if [ -n "$EXTRA_PIP" ]; then pip install -c requirements-runtime.txt $EXTRA_PIP; fi \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin shadowgate \
 && mkdir -p /var/lib/shadowgate && chown 10001 /var/lib/shadowgate

USER 10001
EXPOSE 8080
VOLUME ["/var/lib/shadowgate"]
HEALTHCHECK CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["shadowgate"]
CMD ["serve", "--config", "/etc/shadowgate/analyses.yaml", "--bind", "0.0.0.0:8080"]
