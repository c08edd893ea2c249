FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY duologue duologue
COPY adapters adapters
COPY gateway gateway
COPY projector projector
COPY domain domain
COPY schemas schemas
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 8000
CMD ["duologue", "gateway", "--host", "0.0.0.0", "--port", "8000"]
