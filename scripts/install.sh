#!/usr/bin/env bash
# Installs Loom as a node daemon: release binaries (loomd, loomctl), the default
# configuration (/etc/loom/loom.yaml, kept if present), the systemd unit and the docs.
#   sudo scripts/install.sh                  build and install under / (PREFIX /usr/local)
#   sudo scripts/install.sh --uninstall      loomctl uninstall (tables, listeners), then
#                                            remove what the install put there
#   DESTDIR=/tmp/root scripts/install.sh     install into a scratch root (packaging, tests)
#   BIN=DIR                                  take loomd/loomctl from DIR instead of building
# After installing under /: systemctl daemon-reload && systemctl enable --now loomd
set -euo pipefail
cd "$(dirname "$0")/.."

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
bindir=$DESTDIR$PREFIX/bin
docdir=$DESTDIR$PREFIX/share/doc/loom
confdir=$DESTDIR/etc/loom
unitdir=$DESTDIR/etc/systemd/system

if [[ ${1:-} == --uninstall ]]; then
    if [[ -z $DESTDIR && -x $PREFIX/bin/loomctl ]]; then
        # Tables and listeners first, while loomctl is still there.
        "$PREFIX/bin/loomctl" uninstall || echo "install.sh: loomctl uninstall failed; continuing" >&2
        if command -v systemctl >/dev/null && systemctl is-active --quiet loomd 2>/dev/null; then
            systemctl disable --now loomd || true
        fi
    fi
    rm -f "$bindir/loomd" "$bindir/loomctl" "$unitdir/loomd.service"
    rm -rf "$docdir"
    # The configuration is the operator's: kept unless it is still the default.
    if [[ -f $confdir/loom.yaml ]] && cmp -s deploy/loom.yaml "$confdir/loom.yaml"; then
        rm -f "$confdir/loom.yaml"
        rmdir "$confdir" 2>/dev/null || true
    fi
    if [[ -z $DESTDIR ]] && command -v systemctl >/dev/null; then systemctl daemon-reload 2>/dev/null || true; fi
    echo "Loom removed${DESTDIR:+ from $DESTDIR}"
    exit 0
fi

if [[ -z ${BIN:-} ]]; then
    . scripts/env.sh
    echo "== building release binaries"
    swift build -c release --product loomd >/dev/null
    swift build -c release --product loomctl >/dev/null
    BIN=$PWD/.build/release
fi
install -d -m 0755 "$bindir" "$docdir" "$unitdir"
install -d -m 0755 "$confdir"
install -m 0755 "$BIN/loomd" "$BIN/loomctl" "$bindir/"
sed "s|/usr/local/|$PREFIX/|g" deploy/systemd/loomd.service > "$unitdir/loomd.service"
chmod 0644 "$unitdir/loomd.service"
install -m 0644 README.md ARCHITECTURE.md "$docdir/"
if [[ -e $confdir/loom.yaml ]]; then
    echo "keeping the existing $confdir/loom.yaml"
else
    install -m 0644 deploy/loom.yaml "$confdir/loom.yaml"
fi
if [[ -z $DESTDIR ]] && command -v systemctl >/dev/null; then systemctl daemon-reload 2>/dev/null || true; fi
echo "Loom installed${DESTDIR:+ into $DESTDIR}: $bindir/loomd, $bindir/loomctl, $confdir/loom.yaml, $unitdir/loomd.service"
[[ -n $DESTDIR ]] || echo "start it: systemctl enable --now loomd; then: loomctl status"
