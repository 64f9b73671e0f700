# Builds gale on Debian 12 and runs the hello-world server on port 8879.
#   docker build -t gale . && docker run --rm -p 8879:8879 gale
# The base is pinned to a dated Debian 12 image, so a rebuild gets the same system; move the
# date forward on purpose (docker build --build-arg DEBIAN=bookworm-YYYYMMDD-slim to try one).
ARG DEBIAN=bookworm-20241223-slim

FROM debian:${DEBIAN} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config libhttp-parser-dev libjansson-dev libssl-dev zlib1g-dev \
        liburing-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DGALE_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build -j"$(nproc)" --target hello

FROM debian:${DEBIAN}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libhttp-parser2.9 libjansson4 libssl3 zlib1g liburing2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/hello /usr/local/bin/gale-hello
EXPOSE 8879
USER nobody
# Healthy while the server answers "Hello, world!" on /: bash's /dev/tcp, so the image needs no
# HTTP client. HTTP/1.0 without keep-alive, so the server closes and the read ends.
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8879 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q 'Hello, world!' <&3"]
CMD ["gale-hello", "--port", "8879"]
