#!/bin/sh
# Builds every feed drop into a snapshot, in numeric order (drop-9 before drop-10), the way the
# loader CronJob runs it. Run by hand the same way:
#   CCCGATE_DATA=/var/lib/cccgate sh load-drops.sh
#
# - Drops are folders named drop-<n> under $CCCGATE_DATA/drops; snapshots go to
#   $CCCGATE_DATA/snapshots, where the gateways read them.
# - A drop already built (its sequence not above the snapshot in force) is skipped by the
#   loader itself (exit 0, nothing written).
# - A refused drop writes nothing; this script records why in drop-<n>.refused beside it and
#   goes on with later drops, so one bad drop never stops every later run. A drop with such a
#   file is not tried again until an operator removes the file (docs/operations.md). The run
#   then exits 1, so the Job fails and the CccgateLoaderJobFailed alert fires once per refusal.
# - The loader keeps the newest $CCCGATE_KEEP_SNAPSHOTS snapshots (default 5: a rollback
#   needs the older ones; see docs/operations.md) and removes older ones; 0 keeps all.
# - Any other failure of the loader (usage error, killed for memory) stops the run with its
#   exit code and marks nothing: the next run tries again.
set -u
data=${CCCGATE_DATA:-/var/lib/cccgate}
drops="$data/drops"
snaps="$data/snapshots"
keep=${CCCGATE_KEEP_SNAPSHOTS:-5}
cccgate=${CCCGATE_BIN:-cccgate}

mkdir -p "$snaps" || exit 2
out=$(mktemp) || exit 2
trap 'rm -f "$out"' EXIT
refused=0
built=0
# `load build --keep-snapshots N` removes all but the newest N snapshots after a build.
keep_flag=
if [ "$keep" -gt 0 ]; then
    keep_flag="--keep-snapshots $keep"
fi
# Numbers only, sorted as numbers; names that are not drop-<digits> are ignored.
numbers=$(ls -1 "$drops" 2>/dev/null | sed -n 's/^drop-\([0-9][0-9]*\)$/\1/p' | sort -n)
for n in $numbers; do
    drop="$drops/drop-$n"
    if [ -e "$drop.refused" ]; then
        echo "drop-$n: refused before (see $drop.refused); not tried again"
        continue
    fi
    # shellcheck disable=SC2086 # $keep_flag is empty or two words on purpose
    # The loader reads CCCGATE_KEEP_SNAPSHOTS itself: only the flag says what to keep.
    env -u CCCGATE_KEEP_SNAPSHOTS "$cccgate" load build --drop "$drop" --out "$snaps" $keep_flag \
        >"$out" 2>&1
    code=$?
    case $code in
    0)
        cat "$out"
        built=$((built + 1))
        ;;
    1)
        # The loader refused the drop (and wrote nothing).
        cat "$out" >&2
        cp "$out" "$drop.refused"
        echo "drop-$n: refused; recorded in $drop.refused; going on with later drops" >&2
        refused=$((refused + 1))
        ;;
    *)
        # Not a verdict on the drop (usage error, killed, out of memory): stop, mark nothing,
        # the next run tries again.
        cat "$out" >&2
        echo "drop-$n: the loader failed (exit $code) without judging the drop; stopping" >&2
        exit "$code"
        ;;
    esac
done
echo "loader run: $built drop(s) processed, $refused refused"
if [ "$refused" -gt 0 ]; then exit 1; fi
