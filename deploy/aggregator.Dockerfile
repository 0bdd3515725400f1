# The fedloom aggregator: FastAPI/uvicorn, PostgreSQL and S3 clients, no PyTorch.
# Build from the repository root:  docker build -f deploy/aggregator.Dockerfile -t fedloom-aggregator .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# an unprivileged user owns the store; the image never runs as root
RUN useradd --create-home --uid 10001 fedloom
WORKDIR /opt/fedloom
COPY pyproject.toml README.md constraints-ci.txt ./
COPY src ./src
RUN pip install -c constraints-ci.txt '.[server,postgres,s3,secagg,dp]'

# the store's home and the join tokens a setup job writes (a named volume takes this ownership)
RUN mkdir -p /home/fedloom/runs /home/fedloom/tokens && chown fedloom:fedloom /home/fedloom/runs /home/fedloom/tokens
USER fedloom
WORKDIR /home/fedloom
EXPOSE 8080
# the store, the run config and TLS material are mounted or passed as FEDLOOM_SERVER_* variables
ENTRYPOINT ["fedloom"]
CMD ["server", "--host", "0.0.0.0", "--port", "8080", "--home", "/home/fedloom/runs"]
