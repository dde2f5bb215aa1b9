#!/usr/bin/env bash
# Build local stand-ins for the upstream base images used by the stack
# (python, postgres, redis, haproxy) from Debian bookworm packages, for
# machines that cannot pull from a container registry.
#
#   images/build-local-bases.sh           build whatever is missing
#   images/build-local-bases.sh --force   rebuild everything
#
# Steps: mmdebstrap (using the host's apt setup, no mirror given) makes a
# minimal bookworm rootfs, `docker import` turns it into local/debian:bookworm,
# then `docker build` (classic builder) builds each images/<name>/Dockerfile
# on top of it. See images/README.md.
set -euo pipefail

readonly BASE_TAG="local/debian:bookworm"
# name (directory under images/) and tag, in build order.
readonly IMAGE_NAMES=(python postgres redis haproxy)
readonly IMAGE_TAGS=(
    "local/python:3.11-bookworm"
    "local/postgres:15-bookworm"
    "local/redis:7-bookworm"
    "local/haproxy:2.6-bookworm"
)
readonly MERGED_USR_HOOKS="/usr/share/mmdebstrap/hooks/merged-usr"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR

log() { printf '[build-local-bases] %s\n' "$*" >&2; }
die() { printf '[build-local-bases] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    cat <<EOF
Usage: ${0##*/} [--force]

Builds these images locally from Debian bookworm packages (no registry needed):
  ${BASE_TAG}   (minimal rootfs made with mmdebstrap, imported with docker import)
$(printf '  %s\n' "${IMAGE_TAGS[@]}")

An image that already exists is left alone unless --force is given.

  --force         rebuild everything (base included), without the layer cache

Needs: a reachable docker daemon, mmdebstrap (apt-get install mmdebstrap), root
(or whatever mmdebstrap's automatic mode can use) and the host's apt sources.
EOF
}

FORCE=0
while (($#)); do
    case "$1" in
        -f | --force) FORCE=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# --- preflight -------------------------------------------------------------
command -v docker >/dev/null 2>&1 || die "docker CLI not found on PATH"
if ! docker info >/dev/null 2>&1; then
    die "cannot reach the docker daemon (is it running, and may this user use it? try: docker info)"
fi

# Which stand-ins need building?
todo=()
for i in "${!IMAGE_NAMES[@]}"; do
    if ((FORCE)) || ! image_exists "${IMAGE_TAGS[$i]}"; then
        todo+=("$i")
    fi
done

need_base=0
if ((FORCE)); then
    need_base=1
elif ((${#todo[@]} > 0)) && ! image_exists "$BASE_TAG"; then
    need_base=1
fi

if ((need_base == 0 && ${#todo[@]} == 0)); then
    log "nothing to do: all stand-in images already exist (use --force to rebuild)"
    printf '%s\n' "${IMAGE_TAGS[@]}"
    exit 0
fi

# One scratch dir for the whole run (rootfs tarball, build logs); always removed.
WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/local-bases.XXXXXX")"
readonly WORKDIR
trap 'rm -rf -- "$WORKDIR"' EXIT

# Image IDs replaced by a --force rebuild; removed at the end if unused.
replaced=()
remember_old() {
    local id
    if id="$(docker image inspect --format '{{.Id}}' "$1" 2>/dev/null)"; then
        replaced=("$id" "${replaced[@]}")
    fi
}

# --- base rootfs -----------------------------------------------------------
build_base() {
    command -v mmdebstrap >/dev/null 2>&1 \
        || die "mmdebstrap not found: install it with 'apt-get update && apt-get install mmdebstrap'"
    [[ -d "$MERGED_USR_HOOKS" ]] \
        || die "mmdebstrap hook dir $MERGED_USR_HOOKS missing (reinstall mmdebstrap: apt-get install --reinstall mmdebstrap)"

    local tarball="$WORKDIR/rootfs.tar" t0=$SECONDS
    log "building ${BASE_TAG} rootfs with mmdebstrap (variant apt, no mirror argument)"
    # No MIRROR argument: mmdebstrap uses its bookworm defaults (main, updates,
    # security), reached the same way the host's apt reaches them.
    # merged-usr hook: merged /usr via usr-is-merged instead of the usrmerge
    # package (which would drag perl into every image).
    # The --aptopt/--dpkgopt settings are also written into the rootfs, so the
    # later `apt-get install`s in the Dockerfiles skip recommends and docs too.
    # policy-rc.d (exit 101): package scripts never try to start services. It
    # is written by our own hook, because mmdebstrap deletes the one it makes.
    # shellcheck disable=SC2016  # $1 is expanded by mmdebstrap's hook shell
    mmdebstrap \
        --variant=apt \
        --hook-dir="$MERGED_USR_HOOKS" \
        --skip=chroot/policy-rc.d \
        --extract-hook='printf "#!/bin/sh\nexit 101\n" >"$1/usr/sbin/policy-rc.d"; chmod 0755 "$1/usr/sbin/policy-rc.d"' \
        --aptopt='APT::Install-Recommends "false"' \
        --aptopt='APT::Install-Suggests "false"' \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/apt/* "$1"/var/log/dpkg.log' \
        bookworm "$tarball" \
        || die "mmdebstrap failed (see its messages above)"
    log "mmdebstrap done in $((SECONDS - t0))s ($(du -h "$tarball" | cut -f1) tarball)"

    remember_old "$BASE_TAG"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["bash"]' \
        --message "minimal Debian bookworm rootfs (mmdebstrap --variant=apt) for local stand-in images" \
        "$tarball" "$BASE_TAG" >/dev/null \
        || die "docker import of ${BASE_TAG} failed"
    rm -f -- "$tarball"
    log "imported ${BASE_TAG}"
}

t_start=$SECONDS
if ((need_base)); then
    build_base
fi

# --- stand-ins -------------------------------------------------------------
nocache=()
if ((FORCE)); then nocache=(--no-cache); fi
for i in "${todo[@]}"; do
    name="${IMAGE_NAMES[$i]}"
    tag="${IMAGE_TAGS[$i]}"
    ctx="$SCRIPT_DIR/$name"
    buildlog="$WORKDIR/build-$name.log"
    [[ -f "$ctx/Dockerfile" ]] || die "missing $ctx/Dockerfile"
    log "building ${tag} from images/${name}/Dockerfile"
    t0=$SECONDS
    remember_old "$tag"
    # Classic builder (DOCKER_BUILDKIT=0); --pull=false: never try a registry.
    # --force also bypasses the layer cache, so apt fetches current packages.
    if ! DOCKER_BUILDKIT=0 docker build --pull=false --force-rm "${nocache[@]}" \
        -t "$tag" "$ctx" >"$buildlog" 2>&1; then
        tail -n 40 "$buildlog" >&2
        die "docker build of ${tag} failed (last lines of its output above)"
    fi
    log "built ${tag} in $((SECONDS - t0))s"
done

# Drop the images that a rebuild replaced (untagged now), when nothing uses them.
current=" $(docker image inspect --format '{{.Id}}' "$BASE_TAG" "${IMAGE_TAGS[@]}" 2>/dev/null | tr '\n' ' ' || true)"
for id in "${replaced[@]}"; do
    [[ "$current" == *" $id "* ]] && continue
    docker image rm "$id" >/dev/null 2>&1 || true
done

log "done in $((SECONDS - t_start))s; images:"
printf '%s\n' "${IMAGE_TAGS[@]}"
