#!/usr/bin/env bash
# build-gyp.sh - builds the CPU-only binding.gyp recipe with node-gyp in a
# scratch copy (so the cmake-js build in build/ is untouched), then loads the
# result and runs an exact int8 matmul through it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$root/native" "$root/binding.gyp" "$root/package.json" "$tmp/"
ln -s "$root/node_modules" "$tmp/node_modules"
# Build against the installed Node headers (no download): npm's nodedir
# setting, else the prefix of this node binary when it ships include/node.
nodedir=${npm_config_nodedir:-$(npm config get nodedir 2>/dev/null || true)}
case "$nodedir" in undefined|null) nodedir= ;; esac
if [ -z "$nodedir" ]; then
  prefix=$(dirname "$(dirname "$(command -v node)")")
  [ -f "$prefix/include/node/node_api.h" ] && nodedir=$prefix
fi
(cd "$tmp" && node "$root/node_modules/node-gyp/bin/node-gyp.js" rebuild -j 2 --loglevel=warn ${nodedir:+--nodedir="$nodedir"})
node -e "
const b = require('$tmp/build/Release/sparq.node');
const i = b.info();
const a = new b.Storage(6), w = new b.Storage(6), o = new b.Storage(16);
a.write(Int8Array.from([1, 2, 3, -4, 5, -128]), 0);
w.write(Int8Array.from([7, -8, 9, 10, 11, 12]), 0);
b.packS8(w, 0, 2, 3).then((p) => b.matmulS8(a, 0, 2, 3, p, o, 0)).then(() => {
  const c = Array.from(new Int32Array(o.read(0, 16)));
  const want = [1*7+2*-8+3*9, 1*10+2*11+3*12, -4*7+5*-8+-128*9, -4*10+5*11+-128*12];
  if (JSON.stringify(c) !== JSON.stringify(want)) { console.error('binding.gyp build: wrong result', c, want); process.exit(1); }
  console.log('binding.gyp build ok: int8 path ' + i.kernels.gemm_s8 + ', matmul exact');
});
"
