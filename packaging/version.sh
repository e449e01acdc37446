#!/bin/sh
# The package version: VERSION, plus the commit when it is not a tag
# ("0.1.0+git20261202.3fc8107"); a vX.Y.Z tag on HEAD wins.
cd "$(dirname "$0")/.." || exit 1
tag=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null) && { echo "${tag#v}"; exit 0; }
base=$(cat VERSION 2>/dev/null || echo 0.0.0)
rev=$(git rev-parse --short HEAD 2>/dev/null) || { echo "$base"; exit 0; }
date=$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null)
dirty=$(git diff --quiet HEAD 2>/dev/null || echo .dirty)
echo "$base+git$date.$rev$dirty"
