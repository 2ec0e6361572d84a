# Test only: the fake Gemini / OpenAI-compatible service for stack.test.yml.
FROM debian:bookworm-slim
COPY bin/faena-fake-ai /usr/local/bin/faena-fake-ai
USER nobody
EXPOSE 8080
ENTRYPOINT ["faena-fake-ai", "0.0.0.0:8080"]
