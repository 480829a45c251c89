FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pm_streams pm_streams
COPY bridges bridges
COPY tables tables
COPY web web
RUN pip install --no-cache-dir .
ENV POSITION_MANAGER_WEB_BIND=0.0.0.0
EXPOSE 4800
ENTRYPOINT ["pm-streams"]
CMD ["worker"]
