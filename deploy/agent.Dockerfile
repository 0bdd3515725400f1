# A fedloom agent. EXTRAS picks what the site's trainer needs: the default runs the examples'
# NumPy trainers (scikit-learn's digits); "torch" adds a CPU PyTorch from its own index.
# Build from the repository root:  docker build -f deploy/agent.Dockerfile -t fedloom-agent .
FROM python:3.11-slim

ARG EXTRAS=datasets
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 fedloom
WORKDIR /opt/fedloom
COPY pyproject.toml README.md constraints-ci.txt ./
COPY src ./src
COPY examples ./examples
RUN pip install --extra-index-url "${TORCH_INDEX}" -c constraints-ci.txt ".[${EXTRAS}]"

RUN mkdir -p /home/fedloom/state /home/fedloom/tokens && chown fedloom:fedloom /home/fedloom/state /home/fedloom/tokens
USER fedloom
WORKDIR /home/fedloom
# the state directory keeps the credential, the models and the error-feedback residuals: mount it
VOLUME ["/home/fedloom/state"]
ENTRYPOINT ["fedloom", "agent", "--state-dir", "/home/fedloom/state"]
