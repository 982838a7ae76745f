#!/bin/sh
export MIMALLOC_ALLOW_THP=0
exec /work/notes/herald-aa39120 "$@"
