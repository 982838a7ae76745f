#!/usr/bin/env bash
# The long fuzz run: every property target in tests/fuzz.rs on many inputs, one after another; prints each
# target's inputs, time and inputs/second, then the total. (The test command runs the same targets on
# proptest's default 256 inputs each.) Stops at the first failure, with the shrunk input that fails.
#   ./scripts/fuzz.sh                  # 10.85 million inputs in total, release build
#   ./scripts/fuzz.sh decod rules_with # only the targets whose names contain one of these words
#   SCALE=0.1 ./scripts/fuzz.sh        # a tenth of every count
#   FUZZ_PROFILE=dev ./scripts/fuzz.sh # reuse the dev build (slower inputs, no release compile)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${FUZZ_PROFILE:-release}"
scale="${SCALE:-1}"

# Inputs per target: the cheap targets (pure string work) get millions, the JSON-generating ones fewer.
targets=(
  "topic_matching_agrees_with_the_reference_matcher 4500000"
  "arbitrary_patterns_compile_or_are_refused_and_match_arbitrary_keys 3000000"
  "valid_client_messages_round_trip 2000000"
  "client_message_parsing_never_panics 500000"
  "decoding_arbitrary_bytes_gives_an_event_or_a_typed_error 250000"
  "every_envelope_shape_decodes_to_an_event_with_an_id_or_a_typed_error 200000"
  "shipped_rules_route_arbitrary_events_without_panic_and_with_bounded_output 200000"
  "rules_with_arbitrary_pointers_and_paths_route_as_serde_json_points 200000"
)

# Build once and run a copy, so editing the code during a long run does not change what runs.
bin=$(cargo build --profile "$profile" --test fuzz --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*\/deps\/fuzz-[^"]*\)".*/\1/p' | tail -n1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$bin" "$work/fuzz"

total=0
ran=0
start=$(date +%s)
for t in "${targets[@]}"; do
  read -r name cases <<<"$t"
  if [ $# -gt 0 ]; then
    wanted=0
    for w in "$@"; do [[ $name == *"$w"* ]] && wanted=1; done
    [ $wanted = 1 ] || continue
  fi
  ran=$((ran + 1))
  cases=$(awk -v c="$cases" -v s="$scale" 'BEGIN { printf "%d", c * s }')
  PROPTEST_CASES="$cases" "$work/fuzz" --exact "$name" --nocapture --test-threads 1 >"$work/out" 2>&1 || {
    cat "$work/out"
    echo "fuzz: target $name FAILED" >&2
    exit 1
  }
  line=$(grep -o 'fuzz .* inputs in .*no panic' "$work/out")
  echo "$line"
  total=$((total + $(sed -n 's/.*: \([0-9]*\) inputs in .*/\1/p' <<<"$line")))
done
echo "fuzz: $ran targets, $total inputs in $(($(date +%s) - start)) s, no panic, no failure"
