#!/usr/bin/env bash
# Checks deploy/ offline: Prometheus rules (syntax and unit tests) and config with promtool, the Kubernetes
# manifests against the Kubernetes schemas (kubernetes-validate, strict), Herald's own settings in the ConfigMap
# (`herald check-config`, production profile), the Grafana dashboard's JSON, and that every herald_* metric the
# dashboard and the alerts query is one Herald describes (src/telemetry.rs METRICS), so they cannot drift.
#   ./scripts/check-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/herald-deploy.XXXXXX)
trap 'rm -rf "$work"' EXIT
HERALD_SERVICES_DIR="$work/services"
source scripts/lib/services.sh

ensure_packages promtool:prometheus python3:python3
if ! python3 -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  log "installing kubernetes-validate (PyPI; bundles the Kubernetes schemas)"
  python3 -m pip install -q --disable-pip-version-check kubernetes-validate pyyaml
fi

log "prometheus: check rules, test rules, check config"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
promtool check config deploy/prometheus/prometheus.yml

log "kubernetes: validate every manifest (strict: unknown fields fail)"
manifests=()
for f in deploy/k8s/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
python3 -m kubernetes_validate --strict --quiet "${manifests[@]}"

log "kubernetes: the ConfigMap's herald.toml is a valid production configuration; the grace periods fit"
python3 - "$work" <<'PY'
import re, sys, yaml
work = sys.argv[1]
cm = yaml.safe_load(open("deploy/k8s/configmap.yaml"))
toml = cm["data"]["herald.toml"]
open(f"{work}/herald.toml", "w").write(toml)
grace = int(re.search(r"^shutdown_grace_secs\s*=\s*(\d+)", toml, re.M).group(1))
pod = yaml.safe_load(open("deploy/k8s/deployment.yaml"))["spec"]["template"]["spec"]
pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
total = pod["terminationGracePeriodSeconds"]
# Herald stops within shutdown_grace_secs and STORE_CLOSE (5 s, src/lib.rs) for the store after SIGTERM, and at
# least 1 s more for the Redis link's last messages.
store_close = 5 + 1
assert total > grace + store_close + pre_stop, f"terminationGracePeriodSeconds {total} <= preStop {pre_stop} + shutdown_grace_secs {grace} + {store_close}"
mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
args = pod["containers"][0]["args"]
assert args[args.index("--config") + 1] == mounts["config"] + "/herald.toml", f"--config does not point at the ConfigMap: {args}"
env = {e["name"] for e in pod["containers"][0]["env"]}
for key in ("HERALD__AUTH__JWT_SECRET", "HERALD__AUTH__SERVICE_KEYS", "HERALD__STORE__URL", "HERALD__AMQP__URL"):
    assert key in env, f"{key} is not set from the Secret"
# The probes and the scrape go to server.ops_bind's port (outside max_connections), which the Service does not expose.
ops_port = int(re.search(r'^ops_bind\s*=\s*"[^"]*:(\d+)"', toml, re.M).group(1))
ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
assert ports["ops"] == ops_port, f"the ops containerPort {ports['ops']} is not ops_bind's {ops_port}"
for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
    port = pod["containers"][0][probe]["httpGet"]["port"]
    assert ports.get(port, port) == ops_port, f"{probe} probes {port}, not the ops listener"
meta = yaml.safe_load(open("deploy/k8s/deployment.yaml"))["spec"]["template"]["metadata"]["annotations"]
assert int(meta["prometheus.io/port"]) == ops_port, "Prometheus scrapes another port than ops_bind's"
service = yaml.safe_load(open("deploy/k8s/service.yaml"))
assert all(p["targetPort"] != "ops" and p["targetPort"] != ops_port for p in service["spec"]["ports"]), "the Service exposes the ops port"
print(f"grace: {total}s > preStop {pre_stop}s + shutdown_grace_secs {grace}s + store close {store_close}s")
PY
cargo build -q --bin herald
# Production refuses the development secrets and the example's placeholders: the example Secret's values, as the
# Deployment maps them to HERALD__... variables (scoped service keys included), with each `replace-me` filled in
# (secret.env), must make a valid configuration with the ConfigMap; left as they are (placeholders.env), they must
# be refused.
python3 - "$work" <<'PY'
import secrets, shlex, sys, yaml
work = sys.argv[1]
secret = yaml.safe_load(open("deploy/k8s/secret.example.yaml"))["stringData"]
pod = yaml.safe_load(open("deploy/k8s/deployment.yaml"))["spec"]["template"]["spec"]
with open(f"{work}/secret.env", "w") as filled, open(f"{work}/placeholders.env", "w") as raw:
    for e in pod["containers"][0]["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] == "herald-secrets":
            assert ref["key"] in secret, f"{e['name']}: the example Secret has no {ref['key']}"
            value = secret[ref["key"]]
            raw.write(f"export {e['name']}={shlex.quote(value)}\n")
            while "replace-me" in value:
                value = value.replace("replace-me", secrets.token_hex(16), 1)
            filled.write(f"export {e['name']}={shlex.quote(value)}\n")
PY
(
  # shellcheck disable=SC1091
  source "$work/secret.env"
  HERALD__RULES__PATH=config/rules.toml target/debug/herald check-config --config "$work/herald.toml"
)
if (
  # shellcheck disable=SC1091
  source "$work/placeholders.env"
  HERALD__RULES__PATH=config/rules.toml target/debug/herald check-config --config "$work/herald.toml" >"$work/refused.txt" 2>&1
); then
  echo "the example Secret's placeholders passed the production profile" >&2
  exit 1
fi
grep -q placeholder "$work/refused.txt" || { cat "$work/refused.txt" >&2; exit 1; }
echo "the example Secret's placeholders are refused: $(grep -m1 placeholder "$work/refused.txt")"

log "grafana: dashboard JSON"
python3 -m json.tool deploy/grafana/herald-dashboard.json >/dev/null

log "metrics: every herald_* name the dashboard and the alerts query is one Herald describes"
described=$(grep -oE '"herald_[a-z0-9_]+"' src/telemetry.rs | tr -d '"' | sort -u)
[ "$(wc -l <<<"$described")" -ge 30 ] || { echo "found too few described metrics in src/telemetry.rs" >&2; exit 1; }
# Names Herald does not export (their histogram series aside: _bucket, _sum, _count) in the given files.
undescribed() {
  local name base
  for name in $(grep -ohE 'herald_[a-z0-9_]+' "$@" | sort -u); do
    base=$(sed -E 's/_(bucket|sum|count)$//' <<<"$name")
    grep -qxF "$name" <<<"$described" || grep -qxF "$base" <<<"$described" || echo "$name"
  done
}
# The check itself must catch a made-up name.
echo 'rate(herald_not_a_metric_total[5m])' >"$work/drift.yml"
[ "$(undescribed "$work/drift.yml")" = herald_not_a_metric_total ] || { echo "the drift check is broken" >&2; exit 1; }
unknown=$(undescribed deploy/grafana/herald-dashboard.json deploy/prometheus/alerts.yml deploy/prometheus/alerts.test.yml)
if [ -n "$unknown" ]; then
  echo "queried but not exported by Herald (not in src/telemetry.rs METRICS):" $unknown >&2
  exit 1
fi
echo "deploy checks passed"
