# Shadowgate service image. Builds from requirements.txt (exact pins).
FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app
COPY requirements.txt requirements-nodeps.txt ./
# tensorflow-serving-api pins the full tensorflow wheel (GPU libraries and
# all); tensorflow-cpu provides the same modules at half the size.
RUN pip install -r requirements.txt \
 && pip install --no-deps -r requirements-nodeps.txt

COPY pyproject.toml README.md ./
COPY webhook ./webhook
COPY analyses ./analyses
COPY loadtest ./loadtest
COPY modelserver ./modelserver
COPY demo ./demo
RUN pip install --no-deps --no-build-isolation . \
 && useradd --uid 10001 --create-home shadowgate \
 && mkdir -p /var/lib/shadowgate && chown shadowgate /var/lib/shadowgate

USER 10001
EXPOSE 8080
VOLUME ["/var/lib/shadowgate"]
HEALTHCHECK CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["shadowgate"]
CMD ["serve", "--config", "/etc/shadowgate/analyses.yaml", "--bind", "0.0.0.0:8080"]
