#!/usr/bin/env bash
# Builds Faena's binaries (cargo, release) and its Docker images:
# faena-master, faena-worker, faena-mosquitto, faena-postgres (the store of
# stack.postgres.yml, from Debian's PostgreSQL 15) (and faena-fake-ai with --test,
# faena-prometheus with --monitoring).
#
#   ./scripts/build.sh [--test] [--monitoring] [--no-cargo]
#
#   --test        also build the fake Gemini image the end-to-end test uses
#   --monitoring  also build the Prometheus image of stack.monitoring.yml
#   --no-cargo  use the binaries already in target/release
#
# Images are FROM debian:bookworm-slim. When that cannot be pulled (no
# registry reachable), it is made here: debootstrap (minbase) + docker import.
# Each image is tagged with a hash of what went into it (and :latest), so
# rebuilding unchanged code changes nothing and deploy.sh rolls out only the
# images that changed; the tags go to target/docker/images.env.
#
#   REGISTRY=host:port      push the images there (multi-node swarms)
#   FAENA_DEBIAN_MIRROR     mirror for debootstrap (default http://deb.debian.org/debian)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/stack.sh

test_images=0 monitoring=0 cargo=1
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --test) test_images=1 ;;
    --monitoring) monitoring=1 ;;
    --no-cargo) cargo=0 ;;
    *) die "unknown option '$arg' (see --help)" ;;
  esac
done

need_docker
need_web
if [ "$cargo" = 1 ]; then
  need_build_tools
  say "building the binaries (cargo build --release)"
  # The whole workspace, as dev.sh and the tests build it: one set of artifacts.
  cargo build --locked --release --workspace --bins
fi
for b in faena-master faena-edge faena-autoscaler faena-worker faena; do
  [ -x "target/release/$b" ] || die "target/release/$b is missing; run without --no-cargo"
done
# The worker image carries the default local model, so a stack deployed
# without an AI key still answers (fetched once into the model cache).
local_model=$(./scripts/fetch-model.sh)

# debian:bookworm-slim, pulled or made.
base_image() {
  docker image inspect debian:bookworm-slim >/dev/null 2>&1 && return 0
  say "pulling debian:bookworm-slim"
  if timeout 120 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    return 0
  fi
  say "no registry reachable: making debian:bookworm-slim with debootstrap"
  need_packages debootstrap:debootstrap
  local root=target/docker/rootfs
  rm -rf "$root"
  mkdir -p "$root"
  debootstrap --variant=minbase bookworm "$root" "${FAENA_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >target/docker/debootstrap.log 2>&1 ||
    die "debootstrap failed (see target/docker/debootstrap.log)"
  # What the official slim image leaves out — docs (but copyrights), man
  # pages, translations, apt's lists — now and for packages installed later.
  cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKG
  find "$root/usr/share/doc" -type f ! -name copyright -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
  tar --numeric-owner -C "$root" -c . |
    docker import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - debian:bookworm-slim >/dev/null
  rm -rf "$root"
}

# Release binaries keep debug info for profiling; images get them without it.
binary() {
  strip --strip-debug -o "$2/$1" "target/release/$1"
}

# Copies what one image needs into its own small build context.
stage() {
  local name=$1 ctx=target/docker/$1
  rm -rf "$ctx"
  mkdir -p "$ctx/bin"
  cp docker/healthcheck.sh "$ctx/"
  case "$name" in
    master)
      binary faena-master "$ctx/bin"
      # The edge in front of the masters runs from the same image (stack.yml).
      binary faena-edge "$ctx/bin"
      # The autoscaler runs from the same image as its own service (stack.autoscale.yml).
      binary faena-autoscaler "$ctx/bin"
      # The CLI, for what runs beside a master (deploy.sh --move-sqlite-store).
      binary faena "$ctx/bin"
      mkdir -p "$ctx/web/node_modules/socket.io-client/dist" "$ctx/web/node_modules/uplot/dist"
      cp web/index.html web/app.js web/access.js web/style.css web/dashboard.html web/dashboard.js \
        web/dashboard-charts.js web/dashboard.css "$ctx/web/"
      cp web/node_modules/socket.io-client/dist/socket.io.min.js "$ctx/web/node_modules/socket.io-client/dist/"
      cp web/node_modules/uplot/dist/uPlot.iife.min.js web/node_modules/uplot/dist/uPlot.min.css \
        "$ctx/web/node_modules/uplot/dist/"
      ;;
    worker)
      binary faena-worker "$ctx/bin"
      mkdir -p "$ctx/models"
      cp "$local_model" "$ctx/models/"
      ;;
    mosquitto)
      mkdir -p "$ctx/mosquitto"
      cp mosquitto/setup.sh mosquitto/dynamic-security.json.in mosquitto/acl-observer.in mosquitto/mosquitto.conf.in "$ctx/mosquitto/"
      ;;
    postgres)
      mkdir -p "$ctx/postgres"
      cp postgres/entrypoint.sh "$ctx/postgres/"
      ;;
    fake-ai) binary faena-fake-ai "$ctx/bin" ;;
    prometheus)
      mkdir -p "$ctx/monitoring"
      cp monitoring/prometheus.yml monitoring/alerts.yml "$ctx/monitoring/"
      ;;
  esac
  cp "docker/$name.Dockerfile" "$ctx/Dockerfile"
}

# A tag from what goes into the image: the base image and the context's
# files (names, modes and bytes).
content_tag() {
  (
    docker image inspect --format '{{.Id}}' debian:bookworm-slim
    cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum && find . -type f -perm -u+x | sort
  ) | sha256sum | cut -c1-12
}

mkdir -p target/docker
base_image
prefix=""
[ -n "${REGISTRY:-}" ] && prefix="${REGISTRY%/}/"
images=(master worker mosquitto postgres)
[ "$test_images" = 1 ] && images+=(fake-ai)
[ "$monitoring" = 1 ] && images+=(prometheus)
env_lines=("FAENA_IMAGE_PREFIX=$prefix")
for name in "${images[@]}"; do
  stage "$name"
  tag=$(content_tag "target/docker/$name")
  image="${prefix}faena-$name"
  if docker image inspect "$image:$tag" >/dev/null 2>&1; then
    say "faena-$name:$tag is up to date"
  else
    say "building faena-$name:$tag"
    docker build -t "$image:$tag" "target/docker/$name" >"target/docker/$name.build.log" 2>&1 ||
      die "docker build of faena-$name failed (see target/docker/$name.build.log)"
  fi
  docker tag "$image:$tag" "$image:latest"
  if [ -n "$prefix" ]; then
    say "pushing $image:$tag"
    docker push -q "$image:$tag" >/dev/null
    docker push -q "$image:latest" >/dev/null
  fi
  size=$(docker image inspect --format '{{.Size}}' "$image:$tag")
  echo "  $image:$tag  $((size / 1000000)) MB"
  var=$(echo "FAENA_${name}_TAG" | tr 'a-z-' 'A-Z_')
  env_lines+=("$var=$tag")
done
printf '%s\n' "${env_lines[@]}" >"$IMAGES_ENV.tmp"
# Keep the tags of images not built this time (e.g. the test image).
if [ -f "$IMAGES_ENV" ]; then
  grep -v -F -f <(printf '%s\n' "${env_lines[@]}" | cut -d= -f1 | sed 's/$/=/') "$IMAGES_ENV" >>"$IMAGES_ENV.tmp" || true
fi
mv "$IMAGES_ENV.tmp" "$IMAGES_ENV"
say "images ready; deploy with ./scripts/deploy.sh"
