# loraplex container image: built on Debian 12 with the project's own scripts/deps.sh and `make build`, run
# from debian:12-slim as the non-root user loraplex (uid/gid 10001) with only the libraries the binary links.
#   docker build -t loraplex:0.1.0 .
#   docker run -p 8000:8000 -v /srv/models/base:/models/base:ro loraplex:0.1.0
# More flags: docker run ... loraplex:0.1.0 serve /models/base --host 0.0.0.0 --port 8000 --max-loras 8 ...
# (docs/deploy.md). The version below is the project's (CMakeLists.txt); tests/cli/install_test.cpp checks it.

FROM debian:12 AS build
# Build packages only (no chromium, node or clang: they run the tests and fuzzers, not the build).
ENV LORAPLEX_DEPS=build
WORKDIR /src
COPY scripts/deps.sh scripts/deps.sh
RUN scripts/deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
# The README's build (`make build`: Release, every target), then `make install` staged under /staging.
RUN make build && make install DESTDIR=/staging PREFIX=/usr/local

FROM debian:12-slim
# The shared libraries `ldd loraplex` lists, by package (dpkg -S); libc6, libgcc-s1 and libstdc++6 are in the
# base image already (apt depends on them).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libfmt9 libpcre2-8-0 libutf8proc2 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 loraplex \
 && useradd --system --uid 10001 --gid loraplex --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin loraplex
COPY --from=build /staging/usr/local/bin/loraplex /usr/local/bin/loraplex
COPY --from=build /staging/usr/local/share/doc/loraplex /usr/local/share/doc/loraplex

LABEL org.opencontainers.image.title="loraplex" \
      org.opencontainers.image.description="One base LLM, many LoRA adapters, one OpenAI-compatible server, on the CPU" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
# No org.opencontainers.image.source: the project has no public address yet; add it with `docker build --label`.

USER 10001:10001
EXPOSE 8000
# /health: 200 when the model is loaded and the server admits requests, 503 while it loads or drains. The slim
# image has no curl: bash (essential in every Debian image) speaks HTTP over /dev/tcp. It asks port 8000, the
# CMD's; a server on another --port needs `docker run --health-cmd` to match. The start period covers a load.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5m --retries=3 \
    CMD bash -c 'exec 3<>/dev/tcp/127.0.0.1/8000 && printf "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" >&3 && read -r -t 4 _ code _ <&3 && [ "$code" = 200 ]'
# docker stop sends SIGTERM: loraplex drains in-flight requests for --shutdown-timeout (default 30 s) seconds,
# so give it more (`docker stop -t 40`, or the pod's terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["loraplex"]
CMD ["serve", "/models/base", "--host", "0.0.0.0", "--port", "8000"]
