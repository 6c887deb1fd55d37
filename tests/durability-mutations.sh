#!/usr/bin/env bash
# Mutation check of the product's durability calls: for each fsync (or synced write) marked in the
# source with "// mutation: NAME", remove or weaken that one call in a temporary copy of the tree,
# build, run the power-cut tests (trait Category=PowerCut) and report which tests caught it.
# Every mutation must be caught: a durability call that no test misses is either redundant or untested.
#
# Usage: tests/durability-mutations.sh [--in-place] [--skip-baseline] [NAME ...]   (default: every mutation)
#   --in-place  mutate the checkout itself (its existing build makes each build incremental); every
#               mutated file is restored afterwards, also when the script is interrupted. Do not edit
#               the tree while it runs.
#   --skip-baseline  do not first check that the unmutated tree passes (when that was just shown).
# For each mutation the test projects run in order and the first one with a failing test ends it:
# the table names the tests that caught it there.
# Needs what the power-cut tests need (root, /dev/fuse, fuse3, libfuse3-dev, pkg-config, gcc).
# Takes a while (one build and test run per mutation); not run by .ci/run.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/dengine-mutations.XXXXXX)"
tree="$work/tree"
results="$work/results"
in_place=0
skip_baseline=0
while [ $# -gt 0 ]; do
  case "$1" in
    --in-place) in_place=1; tree="$repo"; shift ;;
    --skip-baseline) skip_baseline=1; shift ;;
    *) break ;;
  esac
done
mkdir -p "$tree" "$results"

# The test projects that hold power-cut tests.
projects=(tests/DEngine.StateMachine.Tests tests/DEngine.Orleans.Tests tests/DEngine.Cluster.Tests)

# NAME|FILE|sed command applied to the marked line ("d" deletes the call).
mutations=(
  "synced-write|src/DEngine.StateMachine/RocksDbStateMachine.cs|s/SetSync(true)/SetSync(false)/"
  "wal-flush-sync|src/DEngine.StateMachine/RocksDbStateMachine.Durability.cs|s/_db!.Handle, 1)/_db!.Handle, 0)/"
  "installed-file-sync|src/DEngine.StateMachine/RocksDbStateMachine.Snapshots.cs|d"
  "installed-copy-sync|src/DEngine.StateMachine/RocksDbStateMachine.Snapshots.cs|d"
  "snapshot-file-sync|src/DEngine.StateMachine/RocksDbStateMachine.Snapshots.cs|d"
  "manifest-sync|src/DEngine.StateMachine/RocksDbStateMachine.Snapshots.cs|s/DurableFiles.WriteAndSync(/File.WriteAllBytes(/"
  "snapshot-dir-sync|src/DEngine.StateMachine/RocksDbStateMachine.Snapshots.cs|d"
  "snapshot-rename-sync|src/DEngine.StateMachine/RocksDbStateMachine.Snapshots.cs|d"
  "pointer-file-sync|src/DEngine.StateMachine/Snapshots/DurableFiles.cs|s/WriteAndSync(temp, contents);/File.WriteAllBytes(temp, contents.ToArray());/"
  "pointer-rename-sync|src/DEngine.StateMachine/Snapshots/DurableFiles.cs|d"
  "new-directory-sync|src/DEngine.StateMachine/Snapshots/DurableFiles.cs|d"
  "fence-rewrite-sync|src/DEngine.StateMachine/RocksDbStateMachine.Durability.cs|d"
  "fence-dir-sync|src/DEngine.StateMachine/RocksDbStateMachine.Durability.cs|d"
  "replog-append-sync|src/DEngine.StateMachine/Replication/ReplicatedLog.cs|d"
  "replog-commit-sync|src/DEngine.StateMachine/Replication/ReplicatedLog.cs|d"
  "replog-truncate-dir-sync|src/DEngine.StateMachine/Replication/ReplicatedLog.cs|d"
  "replog-truncate-sync|src/DEngine.StateMachine/Replication/ReplicatedLog.cs|d"
  "replog-truncate-record-sync|src/DEngine.StateMachine/Replication/ReplicatedLog.cs|d"
  "replog-segment-sync|src/DEngine.StateMachine/Replication/LogSegment.cs|d"
  "replog-segment-dir-sync|src/DEngine.StateMachine/Replication/LogSegment.cs|d"
)

selected=("$@")
wanted() {
  [ ${#selected[@]} -eq 0 ] && return 0
  local n
  for n in "${selected[@]}"; do [ "$n" = "$1" ] && return 0; done
  return 1
}

mutated=""
restore() {
  if [ -n "$mutated" ]; then
    cp "$work/original" "$tree/$mutated"
    mutated=""
  fi
}
trap restore EXIT INT TERM
if [ "$in_place" -eq 0 ]; then
  echo "copying the tree to $tree"
  tar -C "$repo" --exclude=./.git --exclude='*/bin' --exclude='*/obj' --exclude=./TestResults -cf - . | tar -C "$tree" -xf -
fi

build_project() {
  dotnet build "$tree/$1" -c Release -nologo -v q >"$work/build.log" 2>&1
}

build() {
  local p
  for p in "${projects[@]}"; do
    build_project "$p" || return 1
  done
}

# Runs the power-cut tests of one project; prints the short names of the failed tests (or that the run broke).
run_project() {
  local tag="$1" p="$2" status=0 trx failed=""
  trx="$tag-$(basename "$p").trx"
  set +e
  timeout 900 dotnet test "$tree/$p" -c Release --no-build --filter "Category=PowerCut" \
    --logger "trx;LogFileName=$trx" --results-directory "$results" >"$results/$tag-$(basename "$p").log" 2>&1
  status=$?
  set -e
  if [ -f "$results/$trx" ]; then
    failed="$( { grep -o '<UnitTestResult [^>]*' "$results/$trx" || true; } | { grep 'outcome="Failed"' || true; } \
      | sed 's/.*testName="\([^"]*\)".*/\1/' | sed 's/.*\.//' | sort -u | tr '\n' ' ')"
  elif [ "$status" -ne 0 ]; then
    failed="(run of $(basename "$p") failed: exit $status) "
  fi
  echo "$failed"
}

# Every project's power-cut tests (the baseline).
run_tests() {
  local p failed=""
  for p in "${projects[@]}"; do
    failed+="$(run_project "$1" "$p")"
  done
  echo "$failed"
}

# A mutation: project by project (building each only when reached), stopping at the first that catches it.
run_until_caught() {
  local p caught=""
  for p in "${projects[@]}"; do
    if ! build_project "$p"; then
      echo "(does not build: see $work/build.log) "
      return
    fi
    caught="$(run_project "$1" "$p")"
    if [ -n "$caught" ]; then
      echo "$caught"
      return
    fi
  done
}

echo "baseline: building and running the power-cut tests unmutated"
build || { echo "the unmutated tree does not build (see $work/build.log)"; exit 1; }
if [ "${skip_baseline:-0}" -eq 0 ]; then
  baseline="$(run_tests baseline)"
  if [ -n "$baseline" ]; then
    echo "the power-cut tests fail without any mutation: $baseline"
    exit 1
  fi
fi

report=()
uncaught=0
for m in "${mutations[@]}"; do
  IFS='|' read -r name file expr <<<"$m"
  wanted "$name" || continue
  marker="// mutation: $name"
  count="$(grep -c -F "$marker" "$tree/$file" || true)"
  if [ "$count" != "1" ]; then
    report+=("$name -> marker found $count times in $file (expected once)")
    uncaught=$((uncaught + 1))
    continue
  fi
  cp "$tree/$file" "$work/original"
  mutated="$file"
  sed -i "\\|// mutation: $name\$|{ $expr }" "$tree/$file"
  if cmp -s "$tree/$file" "$work/original"; then
    report+=("$name -> the sed command changed nothing")
    mutated=""
    uncaught=$((uncaught + 1))
    continue
  fi
  echo "mutation $name: building and running the power-cut tests"
  caught="$(run_until_caught "$name")"
  restore
  if [ -n "$caught" ]; then
    report+=("$name -> caught by $caught")
  else
    report+=("$name -> NOT CAUGHT")
    uncaught=$((uncaught + 1))
  fi
done

if [ "$in_place" -eq 1 ]; then
  echo "rebuilding the restored checkout"
  build || echo "warning: the restored checkout did not build (see $work/build.log)"
fi

echo
echo "mutation -> caught by"
printf '%s\n' "${report[@]}"
echo "results and logs: $results"
[ "$uncaught" -eq 0 ]
