#!/bin/sh
# A recipe's CI job on hearth: install and upgrade tiers, promote on green (docs/PIPELINES.md).
#
#   RECIPE=webapp ./recipe-ci.sh candidate DIR    # a pull request: its checkout, never promoted
#                                                 # (unless the warm app has promoteCandidates)
#   RECIPE=webapp ./recipe-ci.sh release TAG      # a released version: promoted when green
#
# Install: the change is deployed fresh and checked. Upgrade: the warm canonical's exact
# content is deployed into the run's stack, then the change over it, and checked again. The
# run is green only if both tiers pass; a skipped tier (no canonical to upgrade from) is not a
# pass. `hearth run exec` holds the run while the steps run, finishes it (verified teardown)
# when they exit and exits with their status; hearth promotes a green release by itself.
# Checks: CHECK (default: `curl -fsS http://$HEARTH_DOMAIN/healthz`); HEARTH_SERVER and
# HEARTH_TOKEN_FILE as for every hearth command. The run lives on the job's heartbeats (a lease);
# a job that runs as one container on the swarm's engine may set OWNER=container:ID (its ID or
# name; $HOSTNAME unless it runs on the host network), so the run dies with the container.
set -eu
: "${RECIPE:?set RECIPE to the recipe name}"
kind=${1:?candidate DIR or release TAG}
what=${2:?candidate DIR or release TAG}
case $kind in
candidate) target="--candidate $what" ;;
release) target="--version $what" ;;
*) echo "recipe-ci: $kind: expected candidate or release" >&2; exit 2 ;;
esac
export CHECK="${CHECK:-curl -fsS http://\$HEARTH_DOMAIN/healthz}"
# shellcheck disable=SC2086 # $target is two words on purpose
exec hearth run exec --recipe "$RECIPE" $target --pool "${POOL:-ci}" --deploy ${OWNER:+--owner "$OWNER"} \
    --require install --require upgrade -- sh -eu -c '
tier() { # tier NAME: run the check, report NAME=pass or NAME=fail
    if sh -c "$CHECK"; then hearth run report "$HEARTH_RUN_ID" --tier "$1=pass"
    else hearth run report "$HEARTH_RUN_ID" --tier "$1=fail:check failed"; return 1; fi
}
tier install
if hearth run deploy "$HEARTH_RUN_ID" --from canonical; then
    hearth run deploy "$HEARTH_RUN_ID" --from run
    tier upgrade
else
    hearth run report "$HEARTH_RUN_ID" --tier "upgrade=skip:no base to upgrade from"
fi
'
