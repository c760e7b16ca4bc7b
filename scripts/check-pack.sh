#!/usr/bin/env bash
# check-pack.sh - `npm run check-pack`: what a user gets from `npm install`.
#  1. `npm run prebuild` (unless SKIP_PREBUILD=1 and prebuilds/ exists), then
#     `npm pack`; the tarball must hold the prebuild, the compiled JS + .d.ts
#     and the native sources (to build elsewhere).
#  2. Installs the tarball into an empty app with a PATH that has node and npm
#     only: no compiler, cmake, make or nvcc can be found, so the prebuild must
#     be used.
#  3. Through the installed package: a GEMM, an attention call and a generate on
#     stories260K (greedy ids against run.c) from CommonJS with SPARQ_ISA=ref,
#     avx2 and the default; from ESM (named imports) with two worker_threads
#     generating at once; and a type-check with moduleResolution node16 and
#     bundler.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
stories="${STORIES_DIR:-$root/../shared/models/stories260K}"

step() { printf '\n--- %s\n' "$*"; }

if [ "${SKIP_PREBUILD:-0}" != "1" ] || ! ls prebuilds/*/*.node >/dev/null 2>&1; then
  step "npm run prebuild"
  npm run --silent prebuild
fi

step "baseline objects carry no AVX / AVX-512 instructions (only native/cpu/x86/* do, behind the runtime dispatch)"
objs=$(find build/CMakeFiles/sparq_core.dir build/CMakeFiles/sparq.dir build/CMakeFiles/sparq_cuda.dir -name '*.o' 2>/dev/null | grep -v '/x86/' || true)
[ -n "$objs" ] || { echo "check-pack: no objects under build/ (run npm run prebuild)"; exit 1; }
bad=0
for o in $objs; do
  if objdump -d --no-show-raw-insn "$o" | grep -q '%ymm\|%zmm'; then echo "  $o uses ymm/zmm registers"; bad=1; fi
done
[ "$bad" = 0 ] || exit 1
echo "  $(wc -w <<<"$objs") objects checked"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
step "npm pack"
tarball="$(npm pack --silent --pack-destination "$tmp" | tail -1)"
listing="$(tar -tzf "$tmp/$tarball")"
for f in package/prebuilds/linux-x64/sparq.napi.node package/dist/index.js package/dist/index.d.ts \
         package/native/include/sparq/sparq.h package/native/cuda/gemm.cu package/CMakeLists.txt package/scripts/install.js; do
  grep -qx "$f" <<<"$listing" || { echo "check-pack: $f is missing from $tarball"; exit 1; }
done
echo "$tarball: $(wc -l <<<"$listing") files, $(du -h "$tmp/$tarball" | cut -f1)"

step "install into an empty app with node and npm only on the PATH"
mkdir -p "$tmp/bin" "$tmp/app"
ln -s "$(command -v node)" "$tmp/bin/node"
ln -s "$(command -v npm)" "$tmp/bin/npm"
ln -s "$(command -v sh)" "$tmp/bin/sh"   # npm runs install scripts through sh
for tool in cc gcc g++ c++ cmake make nvcc clang; do
  if PATH="$tmp/bin" command -v "$tool" >/dev/null 2>&1; then echo "check-pack: $tool is visible"; exit 1; fi
done
cd "$tmp/app"
printf '{ "name": "sparq-pack-check", "version": "1.0.0", "private": true }\n' > package.json
PATH="$tmp/bin" npm install --no-audit --no-fund --foreground-scripts "$tmp/$tarball" 2>&1 | grep -v "^npm warn Unknown user config" | tail -5
[ -d node_modules/sparq/build ] && { echo "check-pack: the install compiled the addon instead of using the prebuild"; exit 1; }
cp "$root"/scripts/pack-check/check.cjs "$root"/scripts/pack-check/check.mjs "$root"/scripts/pack-check/check.ts .

step "CommonJS: GEMM, attention, generate (SPARQ_ISA = ref, avx2, default)"
for isa in ref avx2 ""; do
  PATH="$tmp/bin" SPARQ_ISA="$isa" STORIES_DIR="$stories" node check.cjs
done

step "ESM and worker_threads"
PATH="$tmp/bin" STORIES_DIR="$stories" node check.mjs

step "TypeScript against the installed .d.ts"
tsc="$root/node_modules/typescript/bin/tsc"
types="$root/node_modules/@types"
PATH="$tmp/bin" node "$tsc" --noEmit --strict --module node16 --moduleResolution node16 --typeRoots "$types" --types node check.ts
PATH="$tmp/bin" node "$tsc" --noEmit --strict --module esnext --moduleResolution bundler --typeRoots "$types" --types node check.ts
echo "  node16 and bundler resolution type-check"

echo
echo "check-pack passed"
