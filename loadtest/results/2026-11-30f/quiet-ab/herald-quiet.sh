#!/bin/sh
export HERALD_EXP_CKPT_PAGES=100000000 HERALD__TRACE__ENABLED=false
exec /work/notes/herald-expckpt "$@"
