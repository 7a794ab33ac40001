#!/usr/bin/env bash
# `npm run build:deb`: build/procsnap_VERSION_amd64.deb, a full install for a Debian 12 host without Node.js or a
# checkout: the standalone executable as /usr/bin/procsnap, the private CRIU 4.2 and gdb 16 prefixes setup made in
# /opt/procsnap (run through their own loaders, so they need nothing newer from the system), the man page and the
# bash completion, and the unit that runs `procsnap watch` as a service. `apt install ./build/procsnap_VERSION_amd64.deb` also brings what snap uses when present (zstd, python3, iptables).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf 'build:deb: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x build/procsnap ]] || die "build/procsnap is missing: run npm run build:binary first"
for p in /opt/procsnap/criu /opt/procsnap/gdb /opt/procsnap/bin/criu /opt/procsnap/bin/gdb; do
  [[ -e $p ]] || die "$p is missing: run npm run setup first (it installs the private CRIU and gdb)"
done
version=$(node -p 'require("./package.json").version')
pkg=build/deb-root
rm -rf "$pkg"
mkdir -p "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/opt/procsnap" "$pkg/usr/share/man/man1" \
  "$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/doc/procsnap"
install -m 755 build/procsnap "$pkg/usr/bin/procsnap"
# The prefixes as setup made them; the wrappers in /opt/procsnap/bin are where snap looks for its own criu and gdb.
cp -a /opt/procsnap/criu /opt/procsnap/gdb /opt/procsnap/bin "$pkg/opt/procsnap/"
rm -f "$pkg/opt/procsnap/bin/crit" # crit is only a test reference
gzip -9n <dist/man/procsnap.1 >"$pkg/usr/share/man/man1/procsnap.1.gz"
install -m 644 dist/completion/procsnap "$pkg/usr/share/bash-completion/completions/procsnap"
install -m 644 README.md "$pkg/usr/share/doc/procsnap/README.md"
# The watch as a service, one instance per watched service (README: "watch as a service"); not enabled by the install.
install -D -m 644 deploy/procsnap-watch@.service "$pkg/lib/systemd/system/procsnap-watch@.service"
size_kib=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<EOF
Package: procsnap
Version: $version
Architecture: amd64
Maintainer: procsnap <procsnap@localhost>
Installed-Size: $size_kib
Depends: libc6 (>= 2.36), util-linux
Recommends: zstd, python3, iptables, bash-completion
Section: admin
Priority: optional
Description: capture a live Linux process for incident response
 Stops a process and its whole tree with a verified SIGSTOP, checkpoints it with
 CRIU, puts every process back as it was found, builds a core of each from the
 checkpoint and seals everything into one bundle that can be restored or studied.
 Carries its own CRIU 4.2 and gdb 16 in /opt/procsnap and needs no Node.js.
EOF
out=build/procsnap_${version}_amd64.deb
rm -f "$out"
# zstd: the payload is 250 MB of binaries; xz would take minutes on two cores for a few MB less.
dpkg-deb --root-owner-group -Zzstd -z9 --build "$pkg" "$out" >/dev/null
rm -rf "$pkg"
log "$out: $(du -m "$out" | cut -f1) MiB ($((size_kib / 1024)) MiB installed)"
