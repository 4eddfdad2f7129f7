#!/usr/bin/env bash
# The container image's root file system, built without running a container:
#   tools/make_image_root.sh DIR WHEEL
# Debian 12 (minbase, with python3 and CA certificates) by mmdebstrap; a virtual
# environment in /opt/jobcarbon with the wheel and its extras kubernetes and postgres;
# the non-root user 65532 the manifests run as. The wheels are fetched by this host's
# pip (${PIP:-python3 -m pip}: its index and certificates; for the new root's Python
# version) and installed inside the new root by chroot, with no network. Needs root.
# `Containerfile` then copies DIR into an image from scratch (no RUN steps): see the
# README's "Container image".
set -euo pipefail
if (($# != 2)); then
    echo "usage: $0 DIR WHEEL (e.g. build/image-root dist/jobcarbon-0.1.0-py3-none-any.whl)" >&2
    exit 2
fi
root=$1
wheel=$(realpath "$2")
uid=65532
read -r -a pip <<< "${PIP:-python3 -m pip}"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

rm -rf "$root"
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root"
python_version=$(in_root python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
wheels=$root/tmp/wheels
mkdir -p "$wheels"
"${pip[@]}" download --quiet --only-binary=:all: --python-version "$python_version" \
    --dest "$wheels" "$wheel[kubernetes,postgres]"
in_root python3 -m venv /opt/jobcarbon
in_root /opt/jobcarbon/bin/pip install --quiet --no-index --find-links /tmp/wheels \
    --disable-pip-version-check "/tmp/wheels/$(basename "$wheel")[kubernetes,postgres]"
rm -rf "$wheels"
ln -s /opt/jobcarbon/bin/jobcarbon "$root/usr/local/bin/jobcarbon"
in_root useradd -K UID_MAX=65534 --uid "$uid" --user-group --no-create-home --home-dir /var/lib/jobcarbon \
    --shell /usr/sbin/nologin jobcarbon
mkdir -p "$root/etc/jobcarbon" "$root/var/lib/jobcarbon"
chown "$uid:$uid" "$root/var/lib/jobcarbon"
