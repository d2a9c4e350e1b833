#!/bin/bash
# diff two progress logs with the wall-time parts masked (steps/s, tok/s, ETA, seconds) and the out folders named alike
mask() { sed -E -e 's#/tmp/rf/[a-z0-9_]+/#OUT/#g' -e 's/[0-9.]+ step\/s +[0-9]+ tok\/s/S step\/s T tok\/s/' -e 's/ETA .*$/ETA .../' -e 's/\| [0-9,]+ s \|/| N s |/' "$1"; }
diff <(mask $1) <(mask $2) && echo "IDENTICAL (wall times masked): $1 $2"
