#!/usr/bin/env bash
# CI: the engines the integration tests start on localhost, from Debian's packages, installed only when missing
# and only as root (a clean Debian 12 machine): Slurm (slurmctld, slurmd, client commands), munge, and Slurm
# accounting (slurmdbd + MariaDB: submitit reads job states from sacct) for tests/test_slurm.py; PostgreSQL for
# tests/test_tune_postgres.py.
# Quiet; says one line on what it did. Not root, or no apt-get: says so and leaves the tests to skip with reasons.
set -euo pipefail
need=()
for pair in slurmctld:slurm-wlm slurmd:slurm-wlm sbatch:slurm-wlm munged:munge slurmdbd:slurmdbd mariadbd:mariadb-server; do
  bin=${pair%%:*} pkg=${pair##*:}
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    [[ " ${need[*]-} " == *" $pkg "* ]] || need+=("$pkg")
  fi
done
# PostgreSQL (tests/test_tune_postgres.py, a server on loopback): its binaries live off PATH
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then
  echo "engines.sh: slurm-wlm, munge, slurmdbd, mariadb-server, postgresql present"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "engines.sh: not installing ${need[*]} (needs root and apt-get); tests/test_slurm.py will skip, saying why"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if apt-get update -qq >"$log" 2>&1 && apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$log" 2>&1; then
  echo "engines.sh: installed ${need[*]}"
else
  echo "engines.sh: apt-get could not install ${need[*]}; tests/test_slurm.py will skip, saying why:"
  tail -5 "$log"
fi
rm -f "$log"
