#!/usr/bin/env bash
# procsnap setup: installs what is missing and builds the project. Idempotent.
#
# Run as root on Debian 12 (x86_64). `npm run setup`, `npm test` and `npm run demo` run it first,
# so when everything is in place it does nothing, quickly and silently.
#
#   1. apt packages: gdb (gcore), elfutils (eu-stack), zstd, gcc, libc6-dev, make, python3,
#      python3-protobuf (for crit), python3.11-dbg (CPython's gdb extension and debug info: the Python frames of
#      `procsnap stacks`), delve (Go's goroutines in the same stacks) and golang-go (the tests build a Go server);
#      npm too if there is none.
#   1b. age: the tests check that Debian's age CLI decrypts what `dump --encrypt-to` writes, and that snap reads
#      what it encrypted.
#   1c. ansible-core, python3-apt and openssh-server: the test of ansible/capture.yml runs it over SSH against sshd
#      instances it starts on 127.0.0.1 (the package's own ssh service is disabled like the other services, below),
#      and its role installs the .deb with the apt module, which needs python3-apt.
#   2. CRIU >= 4.2. Debian 12's criu 3.17 fails on recent kernels, and 4.1 cannot dump a process
#      holding any AF_INET socket on them. Installing forky's criu 4.2 would upgrade libc6 and
#      friends. Instead, forky's criu (with its libcompel1, libnet9 and libnl-3-200) and exactly the
#      trixie libraries it links are unpacked into the private prefix /opt/procsnap/criu and run
#      through that prefix's own loader by the wrapper /opt/procsnap/bin/criu (linked from
#      /usr/local/sbin/criu). An older prefix (4.1) is replaced. crit must come from the same CRIU
#      (4.2 moved the pagemap's page count): forky's pure-Python crit goes in the same prefix, run
#      by /usr/bin/python3 (/opt/procsnap/bin/crit).
#   2b. The real services the tests capture, from Debian (redis, nginx, PostgreSQL, MariaDB, a JRE, runc,
#      busybox-static), iptables, which criu needs to lock the network around established TCP
#      connections, and nftables: its `nft` finds and removes a network lock that a criu killed mid-dump
#      left behind (snap asks criu for its nftables lock, one table per run, wherever it can remove it).
#      Installed with service start-up disabled: nothing is left listening.
#   2c. gdb >= 14. Debian 12's gdb 13 cannot read AVX-512 register state on AMD CPUs (it knows only Intel's
#      XSAVE layout): the k and zmm registers come out wrong, in the live process and in the cores it writes.
#      Installing trixie's gdb 16 would upgrade libc6 and friends, so, as for CRIU, it and exactly the trixie
#      libraries it links (with its python's standard library) are unpacked into the private prefix
#      /opt/procsnap/gdb and run through that prefix's own loader by the wrapper /opt/procsnap/bin/gdb. procsnap
#      looks there itself, so it is not linked onto PATH and the system's gdb stays as it is. An older or broken
#      prefix is replaced. Needs root; skipped (with a note) otherwise.
#   3. npm ci when node_modules is missing or stale (Node 24 comes from the `node` devDependency).
#   4. tsc when src/, manifests/, tsconfig.json or package.json changed since dist/.build-stamp.
#   5. test/fixtures/*.c -> test/fixtures/bin/NAME when missing or older than the source.
#   6. /usr/local/bin/procsnap -> this checkout's bin/snap, and /usr/local/bin/snap too unless another `snap`
#      (Ubuntu's snapd) is on PATH: the commands work in any new shell. A link to another checkout is moved here;
#      a file that is not such a link is left alone. Needs root; skipped (with a note) otherwise.
#
# Progress goes to stderr; nothing is ever written to stdout.
set -euo pipefail

exec 1>&2 # stdout is reserved: everything this script and its children print goes to stderr

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
cd "$ROOT"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# One setup at a time (npm test and npm run demo may start together): lock this script's own file.
exec 9<"$SELF"
flock -w 900 9 || die "timed out waiting for another scripts/setup.sh to finish"

export DEBIAN_FRONTEND=noninteractive
ORIG_PATH=$PATH
export PATH="$ROOT/node_modules/.bin:$PATH:/usr/local/sbin:/usr/sbin:/sbin"

PREFIX_ROOT=/opt/procsnap
CRIU_PREFIX=$PREFIX_ROOT/criu
CRIU_WRAPPER=$PREFIX_ROOT/bin/criu
CRIT_WRAPPER=$PREFIX_ROOT/bin/crit
CRIU_LINK=/usr/local/sbin/criu
APT_SOURCE=/etc/apt/sources.list.d/procsnap-trixie.list
APT_PIN=/etc/apt/preferences.d/procsnap-trixie
FORKY_SOURCE=/etc/apt/sources.list.d/procsnap-forky.list
FORKY_PIN=/etc/apt/preferences.d/procsnap-forky
# ---------------------------------------------------------------- CRIU minimum
# The oldest criu procsnap runs, read from the one place it is written (MIN_CRIU_VERSION in src/tools/locate.ts, or
# the built dist/tools/locate.js of a package), so doctor, every command and this script never disagree.
CRIU_MIN=$(sed -n "s/^export const MIN_CRIU_VERSION = '\([0-9]*\.[0-9]*\)'.*/\1/p" src/tools/locate.ts dist/tools/locate.js 2>/dev/null | head -n1 || true)
[[ $CRIU_MIN =~ ^[0-9]+\.[0-9]+$ ]] || { echo 'setup: error: no MIN_CRIU_VERSION in src/tools/locate.ts' >&2; exit 1; }
CRIU_MIN_MAJOR=${CRIU_MIN%%.*} # criu MAJOR.MINOR or newer
CRIU_MIN_MINOR=${CRIU_MIN#*.}
# ---------------------------------------------------------------- end CRIU minimum
GDB_PREFIX=$PREFIX_ROOT/gdb
GDB_WRAPPER=$PREFIX_ROOT/bin/gdb
GDB_MIN_MAJOR=14 # the first gdb that knows AMD's XSAVE layout
SYS_PYTHON=/usr/bin/python3 # not `python3`: that may be a pyenv shim without the Debian modules

APT_PACKAGES=(gdb elfutils zstd gcc libc6-dev make python3 python3-protobuf python3-apt python3.11-dbg delve golang-go iptables nftables strace age ansible-core openssh-server)
# The real services the tests capture (each test starts its own instance on 127.0.0.1).
SERVICE_PACKAGES=(redis-server nginx postgresql mariadb-server openjdk-17-jdk-headless runc busybox-static gunicorn)

# forky packages unpacked into the prefix: criu 4.2 and what it needs newer than trixie has, and crit.
FORKY_PACKAGES=(criu libcompel1 libnet9 libnl-3-200 python3-pycriu)
# trixie packages unpacked beside them: the rest of criu's declared Depends closure (checked against the
# NEEDED closure of /usr/sbin/criu: every one of these sonames is linked; nothing else is).
TRIXIE_PACKAGES=(
  libc6 libgcc-s1
  libbsd0 libmd0
  libgnutls30t64 libnettle8t64 libhogweed6t64 libgmp10 libp11-kit0 libffi8 libidn2-0 libunistring5 libtasn1-6
  libnftables1 libnftnl11 libmnl0 libxtables12 libjansson4
  libprotobuf-c1 libuuid1
)

# trixie packages unpacked into the gdb prefix: gdb and the part of its declared Depends closure that it links
# (checked against the NEEDED closure of /usr/bin/gdb: every one of these sonames is linked; nothing else is;
# libdebuginfod brings libcurl and its TLS, Kerberos and LDAP libraries), then its python's standard library and
# the two libraries only that library's extension modules link (libsqlite3-0, libdb5.3t64), so that no module
# ever loads one of the system's older libraries. Data-only Depends are left out.
GDB_PACKAGES=(
  gdb
  libc6 libgcc-s1 libstdc++6 libatomic1
  libexpat1 libipt2 libmpfr6 libgmp10 libncursesw6 libtinfo6 libreadline8t64 libsource-highlight4t64 libxxhash0
  liblzma5 libzstd1 zlib1g libbz2-1.0
  libbabeltrace1 libglib2.0-0t64 libpcre2-8-0 libffi8 libuuid1 libdw1t64 libelf1t64
  libdebuginfod1t64 libjson-c5 libcurl3t64-gnutls libbrotli1 libnghttp2-14 libnghttp3-9 libngtcp2-16
  libngtcp2-crypto-gnutls8 libpsl5t64 librtmp1 libssh2-1t64
  libgnutls30t64 libnettle8t64 libhogweed6t64 libidn2-0 libunistring5 libp11-kit0 libtasn1-6
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 libldap2 libsasl2-2 libssl3t64
  libpython3.13 libpython3.13-stdlib libpython3.13-minimal libsqlite3-0 libdb5.3t64
)

CLEANUP=()
cleanup() { local p; for p in "${CLEANUP[@]}"; do rm -rf -- "$p"; done; }
trap cleanup EXIT

need_root() { [[ $EUID -eq 0 ]] || die "$1 needs root: run 'sudo bash scripts/setup.sh' once"; }

APT_UPDATED=0
apt_update_once() {
  ((APT_UPDATED)) && return 0
  APT_UPDATED=1
  log "apt-get update"
  apt-get -qq -o DPkg::Lock::Timeout=300 update </dev/null ||
    log "warning: apt-get update reported errors; carrying on"
}

# ---------------------------------------------------------------- CRIU probes

# criu_ok CMD...: CMD reports version >= $CRIU_MIN_MAJOR.$CRIU_MIN_MINOR and (as root) `criu check` passes.
# Judged by exit status only: every criu run here prints an rlimit "Error" line and still succeeds.
criu_ok() {
  local out major minor
  out=$("$@" --version 2>/dev/null) || return 1
  major=$(sed -n 's/^Version: *\([0-9][0-9]*\)\..*/\1/p' <<<"$out" | head -n1)
  minor=$(sed -n 's/^Version: *[0-9][0-9]*\.\([0-9][0-9]*\).*/\1/p' <<<"$out" | head -n1)
  [[ -n $major && -n $minor ]] || return 1
  ((major > CRIU_MIN_MAJOR || (major == CRIU_MIN_MAJOR && minor >= CRIU_MIN_MINOR))) || return 1
  [[ $EUID -ne 0 ]] && return 0 # criu check needs root; the version is all we can tell
  "$@" check >/dev/null 2>&1
}

# the loader command line that runs criu from prefix $1
prefix_criu_cmd() {
  local p=$1 lib=$1/usr/lib/x86_64-linux-gnu
  PCMD=("$lib/ld-linux-x86-64.so.2" --inhibit-cache --library-path "$lib:$p/lib/x86_64-linux-gnu" "$p/usr/sbin/criu")
}

our_link() { [[ -L $CRIU_LINK && $(readlink "$CRIU_LINK") == "$CRIU_WRAPPER" ]]; }

CRIU_STATE=ok # ok | link (prefix works, wrapper/link to fix) | install
if path_criu=$(command -v criu) && criu_ok "$path_criu"; then
  CRIU_STATE=ok
elif [[ -x $CRIU_PREFIX/usr/sbin/criu ]] && prefix_criu_cmd "$CRIU_PREFIX" && criu_ok "${PCMD[@]}"; then
  CRIU_STATE=link
else
  CRIU_STATE=install
fi

# ---------------------------------------------------------------- 1. apt packages

missing=()
ALL_PACKAGES=("${APT_PACKAGES[@]}" "${SERVICE_PACKAGES[@]}")
installed=$(dpkg-query -W -f='${db:Status-Status} ${Package}\n' "${ALL_PACKAGES[@]}" 2>/dev/null || true)
for p in "${ALL_PACKAGES[@]}"; do
  grep -qx "installed $p" <<<"$installed" || missing+=("$p")
done
command -v npm >/dev/null || missing+=(npm)

# pin_release NAME SOURCE PIN: release NAME in its own sources file, pinned at priority 1 so that no upgrade ever
# comes from it (it is only there for `apt-get download`).
pin_release() {
  local name=$1 src_file=$2 pin_file=$3 want_src want_pin
  want_src="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $name main"
  want_pin="# procsnap: $name is only here so scripts/setup.sh can apt-get download criu and gdb into /opt/procsnap."$'\n'"# Priority 1: nothing installed is ever upgraded from $name."$'\n'"Package: *"$'\n'"Pin: release n=$name"$'\n'"Pin-Priority: 1"
  if [[ ! -f $pin_file || $(<"$pin_file") != "$want_pin" ]]; then
    printf '%s\n' "$want_pin" >"$pin_file.tmp" && mv -f "$pin_file.tmp" "$pin_file"
    APT_UPDATED=0
  fi
  if [[ ! -f $src_file || $(<"$src_file") != "$want_src" ]]; then
    printf '%s\n' "$want_src" >"$src_file.tmp" && mv -f "$src_file.tmp" "$src_file"
    APT_UPDATED=0
  fi
}

if [[ $CRIU_STATE == install ]]; then
  need_root "installing CRIU"
  pin_release trixie "$APT_SOURCE" "$APT_PIN"
  pin_release forky "$FORKY_SOURCE" "$FORKY_PIN"
fi

if ((${#missing[@]})) || [[ $CRIU_STATE == install ]]; then
  need_root "installing packages"
  apt_update_once
fi

# ---------------------------------------------------------------- boot-time units
# disable_units ROOT PKG...: each .service unit PKG ships that is enabled (under ROOT, or on this host when ROOT is
# empty) is disabled, so it does not start at boot. systemctl does it offline too (no systemd running).
disable_units() {
  local root=$1 pkg unit
  shift
  command -v systemctl >/dev/null || return 0
  for pkg in "$@"; do
    for unit in $(dpkg -L "$pkg" 2>/dev/null | sed -n 's#^/\(usr/\)\{0,1\}lib/systemd/system/\([^/@]*\.service\)$#\2#p' | sort -u); do
      systemctl ${root:+--root="$root"} is-enabled --quiet "$unit" 2>/dev/null || continue
      systemctl ${root:+--root="$root"} disable --quiet "$unit" 2>/dev/null && log "$unit: not started at boot (installed for the tests, which start their own)"
    done
  done
}
# ---------------------------------------------------------------- end boot-time units

if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  # Packaged services must not start (or stay) running on the host: the tests start their own instances on
  # loopback. A policy-rc.d that says "not now" is how Debian lets an installer ask for that.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\n# procsnap setup: no service starts while packages are installed\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    CLEANUP+=(/usr/sbin/policy-rc.d)
  fi
  before=$(dpkg-query -W -f='${db:Status-Status} ${Package}\n' 2>/dev/null | sed -n 's/^installed //p' | sort)
  apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=300 \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null
  # policy-rc.d only keeps the services from starting now: each package's postinst still enables its units (links in
  # multi-user.target.wants), so a host that boots with systemd would start nginx, redis and PostgreSQL, listening.
  # Every unit of a package this run installed (dependencies too: nginx.service is nginx-common's) is disabled;
  # a later upgrade's postinst keeps a unit it finds disabled so. Units of packages that were there before are the
  # host's business. The tests start their own instances and need none of them.
  after=$(dpkg-query -W -f='${db:Status-Status} ${Package}\n' 2>/dev/null | sed -n 's/^installed //p' | sort)
  disable_units '' $(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after"))
fi

# ---------------------------------------------------------------- 2. CRIU >= 4

write_wrappers() {
  mkdir -p "$PREFIX_ROOT/bin"
  cat >"$CRIU_WRAPPER.tmp" <<EOF
#!/bin/sh
# Written by procsnap scripts/setup.sh: Debian forky's criu, run through its own loader and libraries
# in $CRIU_PREFIX (the system's libc is too old for it; nothing on the system was upgraded).
P=$CRIU_PREFIX
L=\$P/usr/lib/x86_64-linux-gnu
exec "\$L/ld-linux-x86-64.so.2" --inhibit-cache --library-path "\$L:\$P/lib/x86_64-linux-gnu" --argv0 criu "\$P/usr/sbin/criu" "\$@"
EOF
  chmod 0755 "$CRIU_WRAPPER.tmp"
  mv -f "$CRIU_WRAPPER.tmp" "$CRIU_WRAPPER"
}

link_criu() {
  if our_link; then
    :
  elif [[ -e $CRIU_LINK || -L $CRIU_LINK ]]; then
    log "warning: $CRIU_LINK exists and is not ours; leaving it (procsnap's criu is $CRIU_WRAPPER)"
  else
    mkdir -p "$(dirname "$CRIU_LINK")"
    ln -s "$CRIU_WRAPPER" "$CRIU_LINK"
  fi
}

# crit (decodes CRIU images) is optional: installed only if it runs cleanly on the system python.
ensure_crit() {
  [[ -e $CRIT_WRAPPER ]] && return 0
  [[ -f $CRIU_PREFIX/usr/bin/crit && -x $SYS_PYTHON ]] || return 0
  cat >"$CRIT_WRAPPER.tmp" <<EOF
#!/bin/sh
# Written by procsnap scripts/setup.sh: Debian forky's crit (pure Python, the same CRIU version) on the system python3.
PYTHONPATH=$CRIU_PREFIX/usr/lib/python3/dist-packages exec $SYS_PYTHON -s $CRIU_PREFIX/usr/bin/crit "\$@"
EOF
  chmod 0755 "$CRIT_WRAPPER.tmp"
  if "$CRIT_WRAPPER.tmp" --help >/dev/null 2>&1; then
    mv -f "$CRIT_WRAPPER.tmp" "$CRIT_WRAPPER"
  else
    rm -f "$CRIT_WRAPPER.tmp"
    log "warning: crit does not run on $SYS_PYTHON (python3-protobuf missing?); skipping crit"
  fi
}

install_criu() {
  log "installing CRIU 4.2 from Debian forky (libraries from trixie) into $CRIU_PREFIX"
  mkdir -p "$PREFIX_ROOT"
  local debs stage old
  debs=$(mktemp -d /tmp/procsnap-debs.XXXXXX)
  CLEANUP+=("$debs")
  chown _apt "$debs" 2>/dev/null || true # lets apt download without its "unsandboxed" warning
  (cd "$debs" && apt-get download -qq "${FORKY_PACKAGES[@]/%//forky}" "${TRIXIE_PACKAGES[@]/%//trixie}" </dev/null) ||
    die "apt-get download of the forky and trixie packages failed"

  stage=$(mktemp -d "$PREFIX_ROOT/.criu.new.XXXXXX")
  CLEANUP+=("$stage")
  local deb
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$stage"; done
  chmod 0755 "$stage"

  # every library criu links must resolve inside the prefix, not fall back to the system's
  prefix_criu_cmd "$stage"
  local listing bad
  listing=$("${PCMD[@]:0:4}" --list "${PCMD[4]}" 2>&1) || die "criu's libraries do not resolve: $listing"
  bad=$(grep -E 'not found|=> /' <<<"$listing" | grep -v -- "=> $stage/" || true)
  [[ -z $bad ]] || die "criu's libraries resolve outside the prefix: $bad"
  criu_ok "${PCMD[@]}" || die "the unpacked criu does not work: $("${PCMD[@]}" check 2>&1 | tail -n 3)"

  # move into place; a half-done install is never at $CRIU_PREFIX
  if [[ -e $CRIU_PREFIX ]]; then
    old="$PREFIX_ROOT/.criu.old.$$"
    mv -T "$CRIU_PREFIX" "$old"
    CLEANUP+=("$old")
  fi
  mv -T "$stage" "$CRIU_PREFIX"
  rm -f "$CRIT_WRAPPER"
}

case $CRIU_STATE in
install)
  install_criu
  write_wrappers
  link_criu
  criu_ok "$CRIU_WRAPPER" || die "$CRIU_WRAPPER does not work after install"
  ensure_crit
  log "criu: $("$CRIU_WRAPPER" --version 2>/dev/null | head -n1), criu check passed"
  [[ :$ORIG_PATH: == *:/usr/local/sbin:* ]] || log "note: add /usr/local/sbin to PATH to get criu"
  ;;
link)
  need_root "linking CRIU"
  [[ -x $CRIU_WRAPPER ]] && criu_ok "$CRIU_WRAPPER" || write_wrappers
  link_criu
  ensure_crit
  ;;
ok)
  # a working criu >= 4 is on PATH; if it is ours, make sure crit is there too
  if our_link && [[ ! -e $CRIT_WRAPPER && $EUID -eq 0 ]]; then ensure_crit; fi
  ;;
esac

# ---------------------------------------------------------------- 2c. gdb >= 14

# gdb_new_enough TEXT: TEXT is exactly a gdb version >= $GDB_MIN_MAJOR (what python's gdb.VERSION prints)
gdb_new_enough() { [[ $1 =~ ^([0-9]+)\.[0-9]+[^[:space:]]*$ ]] && ((BASH_REMATCH[1] >= GDB_MIN_MAJOR)); }

# gdb_ok CMD...: CMD is gdb >= $GDB_MIN_MAJOR and its python starts (python itself prints gdb's version).
gdb_ok() {
  local v
  v=$("$@" --nx --batch -ex 'python print(gdb.VERSION)' 2>/dev/null </dev/null) || return 1
  gdb_new_enough "$v"
}

# the command line that runs gdb from prefix $1 the way the wrapper does (PCMD[2..5] is the loader part)
prefix_gdb_cmd() {
  local p=$1 lib=$1/usr/lib/x86_64-linux-gnu
  PCMD=(env "PYTHONHOME=$p/usr"
    "$lib/ld-linux-x86-64.so.2" --inhibit-cache --library-path "$lib:$p/lib/x86_64-linux-gnu"
    --argv0 gdb "$p/usr/bin/gdb" --data-directory "$p/usr/share/gdb")
}

gdb_wrapper_text() {
  cat <<EOF
#!/bin/sh
# Written by procsnap scripts/setup.sh: Debian trixie's gdb, run through its own loader and libraries in
# $GDB_PREFIX (Debian 12's gdb 13 cannot read AVX-512 state on AMD CPUs; nothing on the system was upgraded).
# Its python finds its standard library through PYTHONHOME, which is taken out of gdb's environment and its
# inferiors' as soon as python has started: nothing gdb runs inherits it. Through this loader gdb first finds the
# prefix's libthread_db, which does not match the system libc its inferiors run on; the system's own, the one
# Debian's gdb uses, is declared safe to load next.
P=$GDB_PREFIX
L=\$P/usr/lib/x86_64-linux-gnu
PYTHONHOME=\$P/usr
export PYTHONHOME
exec "\$L/ld-linux-x86-64.so.2" --inhibit-cache --library-path "\$L:\$P/lib/x86_64-linux-gnu" \\
  --argv0 gdb "\$P/usr/bin/gdb" --data-directory "\$P/usr/share/gdb" \\
  -iex 'python import os; os.environ.pop("PYTHONHOME", None); gdb.execute("unset environment PYTHONHOME")' \\
  -iex 'add-auto-load-safe-path /lib/x86_64-linux-gnu/libthread_db.so.1:/usr/lib/x86_64-linux-gnu/libthread_db.so.1' \\
  "\$@"
EOF
}

# (re)writes the wrapper and runs it once with bytecode writing on: gdb's start-up imports are compiled into the
# prefix then, not again at every start (a third of a second each time).
write_gdb_wrapper() {
  mkdir -p "$PREFIX_ROOT/bin"
  gdb_wrapper_text >"$GDB_WRAPPER.tmp"
  chmod 0755 "$GDB_WRAPPER.tmp"
  mv -f "$GDB_WRAPPER.tmp" "$GDB_WRAPPER"
  env -u PYTHONDONTWRITEBYTECODE "$GDB_WRAPPER" --nx --batch -ex 'python 1' >/dev/null 2>&1 </dev/null || true
}

install_gdb() {
  log "installing gdb from Debian trixie (with its libraries) into $GDB_PREFIX"
  pin_release trixie "$APT_SOURCE" "$APT_PIN"
  apt_update_once
  mkdir -p "$PREFIX_ROOT"
  local debs stage old deb
  debs=$(mktemp -d /tmp/procsnap-debs.XXXXXX)
  CLEANUP+=("$debs")
  chown _apt "$debs" 2>/dev/null || true # lets apt download without its "unsandboxed" warning
  (cd "$debs" && apt-get download -qq "${GDB_PACKAGES[@]/%//trixie}" </dev/null) ||
    die "apt-get download of trixie's gdb and its libraries failed"

  stage=$(mktemp -d "$PREFIX_ROOT/.gdb.new.XXXXXX")
  CLEANUP+=("$stage")
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$stage"; done
  chmod 0755 "$stage"

  # every library gdb links, and every one python's extension modules link, must resolve inside the prefix
  prefix_gdb_cmd "$stage"
  local f listing bad
  for f in "$stage/usr/bin/gdb" "$stage"/usr/lib/python3.*/lib-dynload/*.so; do
    listing=$("${PCMD[@]:2:4}" --list "$f" 2>&1) || die "the libraries of ${f#"$stage"/} do not resolve: $listing"
    bad=$(grep -E 'not found|=> /' <<<"$listing" | grep -v -- "=> $stage/" || true)
    [[ -z $bad ]] || die "the libraries of ${f#"$stage"/} resolve outside the prefix: $bad"
  done
  # its python must start without a word on stderr (no bytecode yet: it would name the stage's paths)
  local out err=$debs/gdb.stderr
  out=$(PYTHONDONTWRITEBYTECODE=1 "${PCMD[@]}" --nx --batch -ex 'python print(gdb.VERSION)' 2>"$err" </dev/null) ||
    die "the unpacked gdb does not run: $(tail -n 3 "$err")"
  [[ ! -s $err ]] || die "the unpacked gdb's python does not start cleanly: $(head -n 3 "$err")"
  gdb_new_enough "$out" || die "the unpacked gdb is not gdb >= $GDB_MIN_MAJOR: $out"

  # move into place; a half-done install is never at $GDB_PREFIX
  if [[ -e $GDB_PREFIX ]]; then
    old="$PREFIX_ROOT/.gdb.old.$$"
    mv -T "$GDB_PREFIX" "$old"
    CLEANUP+=("$old")
  fi
  mv -T "$stage" "$GDB_PREFIX"
}

GDB_STATE=ok # ok | wrapper (prefix works, wrapper to rewrite) | install
if [[ -f $GDB_WRAPPER && $(<"$GDB_WRAPPER") == "$(gdb_wrapper_text)" ]] && gdb_ok "$GDB_WRAPPER"; then
  GDB_STATE=ok
elif [[ -x $GDB_PREFIX/usr/bin/gdb ]] && prefix_gdb_cmd "$GDB_PREFIX" && gdb_ok "${PCMD[@]}"; then
  GDB_STATE=wrapper
else
  GDB_STATE=install
fi

if [[ $GDB_STATE != ok && $EUID -ne 0 ]]; then
  log "note: $GDB_WRAPPER (gdb >= $GDB_MIN_MAJOR) is missing or broken; skipped: it needs a root run"
  GDB_STATE=skip
fi

case $GDB_STATE in
install)
  install_gdb
  write_gdb_wrapper
  gdb_ok "$GDB_WRAPPER" || die "$GDB_WRAPPER does not work after install"
  log "gdb: $("$GDB_WRAPPER" --version 2>/dev/null | head -n1), python starts"
  ;;
wrapper)
  write_gdb_wrapper
  gdb_ok "$GDB_WRAPPER" || die "$GDB_WRAPPER does not work"
  ;;
esac

# ---------------------------------------------------------------- 3. node_modules (Node 24)

node_ok() {
  local v
  v=$("$ROOT/node_modules/.bin/node" --version 2>/dev/null) || return 1
  [[ $v =~ ^v([0-9]+)\. ]] && ((BASH_REMATCH[1] >= 22))
}

NPM_RAN=0
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]] || ! node_ok; then
  command -v npm >/dev/null || die "npm not found"
  log "npm ci"
  # npm itself runs on the system node (not on the node_modules copy it is about to delete);
  # --ignore-scripts=false so that the `node` package's preinstall (which fetches Node 24) runs.
  (
    IFS=: read -r -a dirs <<<"$PATH"
    PATH=
    for d in "${dirs[@]}"; do [[ $d == "$ROOT/node_modules/.bin" ]] || PATH=${PATH:+$PATH:}$d; done
    npm ci --no-audit --no-fund --ignore-scripts=false </dev/null
  )
  node_ok || die "node_modules/.bin/node is not Node >= 22 after npm ci (got: $("$ROOT/node_modules/.bin/node" --version 2>&1 || true)); did the 'node' package's preinstall script run?"
  NPM_RAN=1
fi

# ---------------------------------------------------------------- 4. build

STAMP=dist/.build-stamp
build_needed() {
  ((NPM_RAN)) && return 0
  [[ -f $STAMP ]] || return 0
  local p
  for p in src manifests tsconfig.json package.json scripts/write-oclif-manifest.mjs scripts/write-man-pages.mjs; do
    [[ -e $p ]] || continue
    [[ -n $(find "$p" -newer "$STAMP" -print -quit) ]] && return 0
  done
  return 1
}

if build_needed; then
  log "tsc -p tsconfig.json"
  mkdir -p dist
  : >"$STAMP.new" # stamped before compiling: an edit made during the build triggers the next one
  node_modules/.bin/tsc -p tsconfig.json </dev/null || { rm -f "$STAMP.new"; die "tsc failed"; }
  # drop outputs whose source was deleted (tsc never removes anything from dist/)
  while IFS= read -r -d '' js; do
    rel=${js#dist/}
    rel=${rel%.map}
    rel=${rel%.js}
    [[ -e src/$rel.ts || -e src/$rel.tsx ]] || rm -f -- "$js"
  done < <(find dist -type f \( -name '*.js' -o -name '*.js.map' \) -print0)
  rm -f oclif.manifest.json # oclif must not read a stale one while it is rebuilt
  node_modules/.bin/node scripts/write-oclif-manifest.mjs </dev/null || { rm -f "$STAMP.new"; die "writing oclif.manifest.json failed"; }
  node_modules/.bin/node scripts/write-man-pages.mjs </dev/null || { rm -f "$STAMP.new"; die "writing the man pages failed"; }
  mv -f "$STAMP.new" "$STAMP"
fi

# ---------------------------------------------------------------- 5. test fixtures

shopt -s nullglob
for c in test/fixtures/*.c; do
  name=$(basename "$c" .c)
  out=test/fixtures/bin/$name
  if [[ ! -e $out || $c -nt $out ]]; then
    log "gcc $c -> $out"
    mkdir -p test/fixtures/bin
    gcc -O1 -g -pthread -o "$out.tmp.$$" "$c" </dev/null || { rm -f "$out.tmp.$$"; die "gcc failed for $c"; }
    mv -f "$out.tmp.$$" "$out"
  fi
done
shopt -u nullglob

# ---------------------------------------------------------------- 6. procsnap (and snap) on PATH

# ours LINK: LINK is a symlink to some procsnap checkout's bin/snap (this one or an older clone)
ours() { [[ -L $1 ]] && [[ $(readlink "$1") == */bin/snap ]]; }
link_command() {
  local name=$1 link=/usr/local/bin/$1
  [[ $(readlink "$link" 2>/dev/null) == "$ROOT/bin/snap" ]] && return 0
  if [[ -e $link || -L $link ]] && ! ours "$link"; then
    log "note: $link exists and is not procsnap's; leaving it (run $ROOT/bin/snap)"
    return 0
  fi
  ln -sfn "$ROOT/bin/snap" "$link"
  log "$name -> $ROOT/bin/snap"
}
if [[ $EUID -eq 0 ]]; then
  link_command procsnap
  # snap only where it is not already another program's (snapd's snap on Ubuntu): runbooks can always say procsnap.
  other=$(PATH=$ORIG_PATH command -v snap 2>/dev/null || true)
  names=(procsnap)
  if [[ -z $other || $other == /usr/local/bin/snap ]]; then
    link_command snap
    names+=(snap)
  else
    log "note: $other is another program's snap; use procsnap"
  fi
  # The man page, and bash completion (bash-completion reads this directory; without it: eval "$(procsnap autocomplete bash)").
  install_if_changed() { # SOURCE TARGET
    cmp -s "$1" "$2" && return 0
    mkdir -p "$(dirname "$2")" && install -m 644 "$1" "$2" && log "installed $2"
  }
  for name in "${names[@]}"; do
    install_if_changed "dist/man/$name.1" "/usr/local/share/man/man1/$name.1"
    install_if_changed "dist/completion/$name" "/usr/local/share/bash-completion/completions/$name"
  done
else
  [[ -x /usr/local/bin/procsnap ]] || log "note: not root, so procsnap is not linked into /usr/local/bin; run $ROOT/bin/snap"
fi

exit 0
