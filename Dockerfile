# The research-runner image: one image for every service in compose.yaml (worker, scheduler, flower, emulator).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv

WORKDIR /app
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev --no-editable

# Not root; the reports folder exists with this owner so a fresh named volume mounted there inherits it.
RUN useradd --system --create-home research && mkdir -p /data/reports && chown -R research /data
USER research
ENV PATH="/app/.venv/bin:$PATH" \
    RESEARCH_DATA_DIR=/data \
    RESEARCH_REPORTS_DIR=/data/reports

ENTRYPOINT ["research"]
CMD ["--help"]
