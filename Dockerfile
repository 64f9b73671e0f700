# Builds gale on Debian 12 and runs the hello-world server on port 8879.
#   docker build -t gale . && docker run --rm -p 8879:8879 gale
FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config libhttp-parser-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DGALE_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build -j"$(nproc)"

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libhttp-parser2.9 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/hello /usr/local/bin/hello
EXPOSE 8879
USER nobody
CMD ["hello", "--port", "8879"]
