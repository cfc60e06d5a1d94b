#!/usr/bin/env bash
# A real `ray up` of (a test variant of) cluster/local.yaml against sshd on 127.0.0.1, a search
# submitted with `ray job submit -- hpo run …`, its results checked (JSON summary, MLflow runs on
# the head's tracking server), then `ray down` and `ray stop` on the head. Not part of pytest
# (minutes, root, a system sshd); cluster/README.md has its last output.
#
# Run as root from anywhere, with the project's venv built (.venv):  bash cluster/test_local_up.sh
# Needs the Debian packages openssh-server and rsync (apt-get install -y openssh-server rsync).
#
# The "cluster" logs in as a throwaway user (hpo-up), not root: `ray down` runs a plain `ray stop`
# on the head, which stops every Ray process of its user on the machine; as hpo-up it can reach
# only this test's own. That user's Python is the system python3.11 with this machine's venv's
# packages (same Ray, torch, MLflow; nothing downloaded); hpo itself is installed from the
# file mount, as on a real cluster. Everything started here is stopped by its pid at the end.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$REPO/.venv"
USER_UP=hpo-up
HOME_UP=/home/$USER_UP
T="$(mktemp -d /tmp/hpo-up.XXXXXX)"
SSHD_PID=""
CREATED_USER=0
say() { printf '\n== %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "run as root (it starts sshd and adds the user $USER_UP)"; exit 2; }
for cmd in /usr/sbin/sshd rsync ssh ssh-keygen curl "$VENV/bin/ray" /usr/bin/python3.11; do
  [ -x "$(command -v "$cmd")" ] || { echo "missing: $cmd (apt-get install -y openssh-server rsync python3.11-venv)"; exit 2; }
done
port() { "$VENV/bin/python" -c 'from hpo.testing.processes import free_port; print(free_port())'; }
"$VENV/bin/python" -c 'import socket; socket.socket().bind(("127.0.0.1", 22))' 2>/dev/null \
  || { echo "127.0.0.1:22 is taken (Ray's SSH has no port option): stop that sshd first"; exit 2; }

cleanup() {
  set +e
  if id "$USER_UP" >/dev/null 2>&1; then
    for pid in $(pgrep -u "$USER_UP"); do kill "$pid" 2>/dev/null; done  # this test's own user only
    sleep 2
    for pid in $(pgrep -u "$USER_UP"); do kill -9 "$pid" 2>/dev/null; done
  fi
  [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null
  [ "$CREATED_USER" = 1 ] && userdel -r "$USER_UP" 2>/dev/null
  rm -f /tmp/ray/cluster-hpo-up-test.state /tmp/ray/cluster-hpo-up-test.lock
  rm -rf "/tmp/torchinductor_$USER_UP"  # torch's compile cache of the trials
  ctl=$(python3 -c 'import getpass, hashlib as h; print("/tmp/ray_ssh_%s/%s" % (h.sha256(getpass.getuser().encode()).hexdigest()[:10], h.sha256(b"hpo-up-test").hexdigest()[:10]))')
  rm -rf "$ctl"; rmdir "$(dirname "$ctl")" 2>/dev/null  # ray up's SSH control sockets
  rm -rf "$T"
}
trap cleanup EXIT

say "sshd on 127.0.0.1:22, user $USER_UP with a generated key"
id "$USER_UP" >/dev/null 2>&1 || { useradd -m -s /bin/bash "$USER_UP"; CREATED_USER=1; }
usermod -p '*' "$USER_UP"  # no password, but not "locked": sshd without PAM refuses locked accounts
ssh-keygen -q -t ed25519 -N '' -f "$T/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -f "$T/host_ed25519"
install -d -m 700 -o "$USER_UP" -g "$USER_UP" "$HOME_UP/.ssh"
install -m 600 -o "$USER_UP" -g "$USER_UP" "$T/id_ed25519.pub" "$HOME_UP/.ssh/authorized_keys"
mkdir -p /run/sshd
cat > "$T/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port 22
HostKey $T/host_ed25519
PidFile $T/sshd.pid
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
AllowUsers $USER_UP
EOF
/usr/sbin/sshd -D -f "$T/sshd_config" -E "$T/sshd.log" &
SSHD_PID=$!
ok=0
for _ in $(seq 50); do
  if ssh -q -i "$T/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
    "$USER_UP@127.0.0.1" true; then ok=1; break; fi
  sleep 0.2
done
[ "$ok" = 1 ] || { echo "ssh $USER_UP@127.0.0.1 fails:"; tail -n 5 "$T/sshd.log"; exit 1; }
echo "sshd pid $SSHD_PID; ssh $USER_UP@127.0.0.1 works"

say "Python for $USER_UP: python3.11 venv over this machine's packages (no downloads)"
su - "$USER_UP" -c "/usr/bin/python3.11 -m venv --without-pip ~/venv"  # pip, setuptools: the base packages
echo "$VENV/lib/python3.11/site-packages" > "$HOME_UP/venv/lib/python3.11/site-packages/zz-base.pth"
for script in "ray:ray.scripts.scripts:main" "mlflow:mlflow.cli:cli"; do
  IFS=: read -r name mod fn <<< "$script"
  printf '#!%s\nimport sys\nfrom %s import %s\nsys.exit(%s())\n' "$HOME_UP/venv/bin/python" "$mod" "$fn" "$fn" \
    > "$HOME_UP/venv/bin/$name"
  chmod 755 "$HOME_UP/venv/bin/$name"
done
chown -R "$USER_UP:$USER_UP" "$HOME_UP/venv"

say "test variant of cluster/local.yaml"
GCS=$(port); DASH=$(port); AGENT=$(port); MLPORT=$(port)
"$VENV/bin/python" - "$REPO/cluster/local.yaml" "$T/local-test.yaml" <<EOF
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
c["cluster_name"] = "hpo-up-test"
c["provider"].update(head_ip="127.0.0.1", worker_ips=[])
c["auth"] = {"ssh_user": "$USER_UP", "ssh_private_key": "$T/id_ed25519"}
c["min_workers"] = c["max_workers"] = 0
# same order as local.yaml: the bashrc line, then torch (here: already there), then hpo from the file
# mount with Ray's job server (ray[default]: pip adds what the base packages lack, from PyPI)
setup = [s for s in c["setup_commands"] if "bashrc" in s]
setup += ["python -c 'import torch; assert torch.__version__.startswith(\"2.13.0\"), torch.__version__'",
          "python -m pip install -q --no-build-isolation ~/hpo 'ray[default]==2.60.0' && hpo --help > /dev/null"]
c["setup_commands"] = setup
def local(cmd):
    return (cmd.replace("/srv/hpo", "$HOME_UP/shared").replace("--port 5000", "--port $MLPORT")
               .replace("127.0.0.1:5000", "127.0.0.1:$MLPORT")
               .replace("--port=6379", "--port=$GCS --dashboard-port=$DASH "
                        "--dashboard-agent-listen-port=$AGENT --temp-dir=$HOME_UP/rt --num-cpus=2"))
c["head_start_ray_commands"] = [local(x) for x in c["head_start_ray_commands"]]
yaml.safe_dump(c, open(sys.argv[2], "w"), sort_keys=False)
EOF
"$VENV/bin/python" -c "
import sys, yaml; from ray.autoscaler._private.util import prepare_config, validate_config
validate_config(prepare_config(yaml.safe_load(open('$T/local-test.yaml')))); print('Ray validates it')"

say "ray up -y"
cd "$REPO"
timeout 600 "$VENV/bin/ray" up -y --no-config-cache "$T/local-test.yaml" > "$T/up.log" 2>&1 \
  || { tail -n 60 "$T/up.log"; exit 1; }
grep -v -e VINFO -e VVINFO "$T/up.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -A 7 -e "Ray runtime started" | head -n 8
grep -e "New status: up-to-date" -e "Useful commands" "$T/up.log" | cut -d' ' -f3-
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$DASH/api/version" > /dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$DASH/api/version" > /dev/null || {
  echo "no job server on port $DASH:"; tail -n 30 "$HOME_UP"/rt/session_latest/logs/dashboard.{log,err} 2>&1; exit 1; }
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$MLPORT/health" > /dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$MLPORT/health" > /dev/null || { echo "no MLflow server:"; tail -n 30 "$HOME_UP/mlflow.log"; exit 1; }
echo "job server on 127.0.0.1:$DASH and MLflow server on 127.0.0.1:$MLPORT answer"

say "ray job submit -- hpo run quickstart.yaml (4 trials)"
export RAY_ADDRESS="http://127.0.0.1:$DASH"
timeout 600 "$VENV/bin/ray" job submit --working-dir "$REPO/examples" -- \
  hpo run quickstart.yaml --address auto --set num_samples=4 --set task.epochs=2 \
  --set storage_path="$HOME_UP/shared/hpo_results" --json 2>&1 | tee "$T/job.log" | tail -n 12
unset RAY_ADDRESS

say "results: JSON summary and the head's MLflow server"
"$VENV/bin/python" - "$T/job.log" "$MLPORT" <<'EOF'
import json, sys
from mlflow.tracking import MlflowClient
line = next(ln for ln in reversed(open(sys.argv[1]).read().splitlines()) if ln.startswith("{"))
summary = json.loads(line)
assert summary["num_trials"] == 4 and summary["num_errored"] == 0, summary
client = MlflowClient(tracking_uri=f"http://127.0.0.1:{sys.argv[2]}")
exp = client.get_experiment_by_name(summary["name"])
runs = client.search_runs([exp.experiment_id])
children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary["parent_run_id"]]
assert len(children) == 4, len(children)
print(f"summary: {summary['num_trials']} trials, best {summary['best_metric']:.3f}, nodes {summary['nodes']}, "
      f"run directory {summary['storage_path']}")
print(f"MLflow on the head (port {sys.argv[2]}): experiment {exp.name!r}, parent run {summary['parent_run_id']}, "
      f"{len(children)} trial runs, all {sorted({r.info.status for r in children})}")
EOF

say "ray down -y"
timeout 300 "$VENV/bin/ray" down -y "$T/local-test.yaml" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | tail -n 5
say "ray stop on the head (for what ray down may have left), then its MLflow server (ray down leaves it)"
ssh -q -i "$T/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "$USER_UP@127.0.0.1" \
  'bash -lic "ray stop; kill \$(cat ~/mlflow.pid) && echo stopped MLflow server \$(cat ~/mlflow.pid)"' 2>&1 \
  | sed 's/\x1b\[[0-9;]*m//g' | grep -v -e "Could not terminate" -e "no job control" -e "terminal process group" | tail -n 3
# (as root, that `ray stop` would also have stopped every other Ray cluster of root on this machine:
#  as hpo-up it says "Could not terminate" for those, which is filtered out above)
for _ in $(seq 30); do  # MLflow hands SIGTERM on to its uvicorn workers and waits for them
  left=$(pgrep -u "$USER_UP" -a | grep -v -e sshd -e 'bash -lic' || true)
  [ -z "$left" ] && break
  sleep 1
done
echo "processes of $USER_UP left: ${left:-none}"
[ -z "$left" ] || { echo "FAILED: they should have stopped"; exit 1; }
say "PASSED"
