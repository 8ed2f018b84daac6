#!/usr/bin/env bash
# After tagging a release (git tag -a v$pkgver): write the sha256 of the tag's source tarball into the PKGBUILD.
# The tarball is `git archive` of the tag with the prefix GitHub gives it ($pkgname-$pkgver/), which is what
# GitHub serves at $url/archive/v$pkgver.tar.gz; after pushing the tag, compare with
#   curl -sL https://github.com/deepseek-proxy/deepseek-proxy/archive/v$pkgver.tar.gz | sha256sum
# Usage: deploy/arch/update-checksum.sh [PKGBUILD]   (run inside the repository)
set -euo pipefail
pkgbuild=${1:-"$(dirname "$0")/PKGBUILD"}
pkgname=$(sed -n 's/^pkgname=//p' "$pkgbuild")
pkgver=$(sed -n 's/^pkgver=//p' "$pkgbuild")
tag="v$pkgver"
if ! git rev-parse -q --verify "refs/tags/$tag" >/dev/null; then
    echo "no tag $tag in this repository: tag the release first (git tag -a $tag)" >&2
    exit 1
fi
sum=$(git archive --format=tar.gz --prefix="$pkgname-$pkgver/" "$tag" | sha256sum | cut -d' ' -f1)
sed -i "s|^sha256sums=.*|sha256sums=('$sum')  # git archive of $tag (deploy/arch/update-checksum.sh)|" "$pkgbuild"
echo "$pkgbuild: $tag $sum"
